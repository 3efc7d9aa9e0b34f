//! Bad input produces errors that name the file, document, line, column and
//! field, one per broken document, without hiding the good documents.

use mesh_api::loader::DocumentErrorKind;
use mesh_api::{Object, load_str};

const GOOD_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: good
spec:
  hosts: [good]
  http:
  - route:
    - destination:
        host: good
";

/// Loads `good VS` + `bad`, expects the good one and exactly one error.
fn one_error(bad: &str) -> mesh_api::loader::DocumentError {
    let text = format!("{GOOD_VS}---\n{bad}");
    let config = load_str("reviews.yaml", &text);
    assert_eq!(
        config.resources.len(),
        1,
        "the good document must load: {:?}",
        config.errors
    );
    assert!(matches!(
        config.resources[0].object,
        Object::VirtualService(_)
    ));
    assert_eq!(config.errors.len(), 1, "{:?}", config.errors);
    let e = config.errors[0]
        .as_document()
        .expect("a document error")
        .clone();
    assert_eq!(&*e.file, "reviews.yaml");
    assert_eq!(e.document, 2);
    e
}

// GOOD_VS has 10 lines and the separator is line 11, so `bad` starts at line 12.

#[test]
fn wrong_type_names_field_line_and_column() {
    let e = one_error(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 90
    - destination:
        host: reviews
        subset: v2
      weight: ten
",
    );
    assert_eq!(e.kind, DocumentErrorKind::InvalidValue);
    assert_eq!(e.field, "spec.http[0].route[1].weight");
    assert_eq!((e.line, e.column), (27, 15));
    assert_eq!(
        e.to_string(),
        "reviews.yaml: document 2, line 27, column 15: spec.http[0].route[1].weight: invalid type: string \"ten\", expected u32"
    );
}

#[test]
fn syntax_error_names_line() {
    let e = one_error(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets: [ {name: v1
",
    );
    assert_eq!(e.kind, DocumentErrorKind::Syntax);
    assert!(e.line >= 18, "{e}");
    assert!(
        e.to_string().starts_with("reviews.yaml: document 2, line "),
        "{e}"
    );
}

#[test]
fn an_alias_bomb_is_refused_saying_which_limit() {
    let mut bomb = String::from("l0: &l0 [a, b, c, d, e, f, g, h, i]\n");
    for level in 1..9 {
        let aliases = vec![format!("*l{}", level - 1); 9].join(", ");
        bomb.push_str(&format!("l{level}: &l{level} [{aliases}]\n"));
    }
    let e = one_error(&bomb);
    assert_eq!(e.kind, DocumentErrorKind::Syntax);
    assert!(
        e.to_string().contains(
            "document too large to load: more than 250000 nodes once its aliases are expanded"
        ),
        "{e}"
    );
}

#[test]
fn unknown_enum_value_names_field() {
    let e = one_error(
        "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    tls:
      mode: SOMETIMES
",
    );
    assert_eq!(e.kind, DocumentErrorKind::UnknownEnumValue);
    assert_eq!(e.field, "spec.trafficPolicy.tls.mode");
    assert_eq!((e.line, e.column), (20, 13));
    assert!(e.message.contains("unknown variant `SOMETIMES`"), "{e}");
    assert!(e.message.contains("ISTIO_MUTUAL"), "{e}");
}

#[test]
fn missing_required_field_names_parent() {
    let e = one_error(
        "apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: gw
spec:
  servers:
  - port:
      number: 80
      protocol: HTTP
    hosts: ['*']
",
    );
    assert_eq!(e.kind, DocumentErrorKind::MissingField);
    assert_eq!(e.field, "spec.servers[0].port");
    // The line of the `port:` key whose mapping lacks `name`.
    assert_eq!(e.line, 18);
    assert!(e.message.contains("missing field `name`"), "{e}");
}

#[test]
fn bad_duration_names_field() {
    let e = one_error(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
    timeout: 10
",
    );
    assert_eq!(e.kind, DocumentErrorKind::InvalidDuration);
    assert_eq!(e.field, "spec.http[0].timeout");
    assert_eq!((e.line, e.column), (22, 14));
    assert!(e.message.contains("invalid duration \"10\""), "{e}");
}

#[test]
fn negative_duration_is_rejected() {
    let e = one_error(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      interval: -5s
",
    );
    assert_eq!(e.kind, DocumentErrorKind::InvalidDuration);
    assert_eq!(e.field, "spec.trafficPolicy.outlierDetection.interval");
    assert_eq!(e.line, 20);
}

#[test]
fn unknown_field_is_an_error() {
    let e = one_error(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsetz: []
",
    );
    assert_eq!(e.kind, DocumentErrorKind::UnknownField);
    assert_eq!(e.field, "spec.subsetz");
    assert_eq!(e.line, 18);
}

#[test]
fn unsupported_version_and_unknown_kind() {
    let text = format!(
        "{GOOD_VS}---\napiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata:\n  name: x\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
    );
    let config = load_str("mixed.yaml", &text);
    assert_eq!(config.resources.len(), 1);
    assert_eq!(config.errors.len(), 1);
    let e = config.errors[0].as_document().unwrap();
    assert_eq!(e.kind, DocumentErrorKind::UnsupportedVersion);
    assert_eq!(e.line, 12);
    assert_eq!(config.skipped.len(), 1);
    assert_eq!(config.skipped[0].kind, "Widget");
    assert_eq!(config.skipped[0].source.document, 3);
    assert_eq!(config.skipped[0].source.line, 17);
}

#[test]
fn every_document_reports_its_own_error() {
    let bad = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: x\nspec:\n  host: 5: 6\n";
    let text = format!("{bad}---\n{GOOD_VS}---\n{bad}");
    let config = load_str("many.yaml", &text);
    assert_eq!(config.resources.len(), 1);
    let docs: Vec<usize> = config
        .errors
        .iter()
        .map(|e| e.as_document().unwrap().document)
        .collect();
    assert_eq!(docs, vec![1, 3]);
}

#[test]
fn list_items_carry_their_own_lines() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: a\n- apiVersion: networking.istio.io/v1\n  kind: DestinationRule\n  metadata:\n    name: b\n    namespace: prod\n  spec:\n    host: b\n    subsets:\n    - name: v1\n      labels: {version: 7}\n";
    let config = load_str("list.yaml", text);
    assert_eq!(config.resources.len(), 1, "{:?}", config.errors);
    assert_eq!(config.resources[0].meta.name, "a");
    assert_eq!(config.resources[0].meta.namespace, "default");
    assert_eq!(config.resources[0].meta.source.line, 4);
    let e = config.errors[0].as_document().unwrap();
    assert_eq!(e.field, "spec.subsets[0].labels.version");
    assert_eq!(e.line, 17);
}

#[test]
fn misspelt_spec_is_an_error() {
    let e = one_error(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
sepc:
  host: reviews
",
    );
    assert_eq!(e.kind, DocumentErrorKind::UnknownField);
    assert_eq!(e.field, "sepc");
    assert_eq!(e.line, 16);
}
