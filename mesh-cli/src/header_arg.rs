//! `-H 'Name: value'` arguments, as curl takes them: request headers for `meshctl traffic`
//! and the request `meshctl explain` describes.

/// Why a `-H 'Name: value'` argument is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderArgError {
    #[error("header {0:?}: expected `Name: value`")]
    NoColon(String),
    #[error("header {0:?}: the name must be a token (letters, digits, `-`, `_`, ...)")]
    BadName(String),
    #[error("header {0:?}: the value must not hold control characters (CR, LF, ...)")]
    BadValue(String),
}

/// `Name: value` as curl's `-H` takes it; the name must be an HTTP token and the value free of
/// control characters, so an argument can never inject another header line.
pub fn parse_header(arg: &str) -> Result<(String, String), HeaderArgError> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| HeaderArgError::NoColon(arg.to_string()))?;
    let name = name.trim();
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(is_tchar) {
        return Err(HeaderArgError::BadName(arg.to_string()));
    }
    let value = value.trim();
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(HeaderArgError::BadValue(arg.to_string()));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_arguments() {
        assert_eq!(
            parse_header("end-user: jason").unwrap(),
            ("end-user".to_string(), "jason".to_string())
        );
        assert_eq!(
            parse_header("x-a:b:c").unwrap(),
            ("x-a".to_string(), "b:c".to_string())
        );
        assert!(matches!(
            parse_header("no colon"),
            Err(HeaderArgError::NoColon(_))
        ));
        assert!(matches!(
            parse_header("bad name: x"),
            Err(HeaderArgError::BadName(_))
        ));
        assert!(matches!(
            parse_header("x: a\r\nevil: 1"),
            Err(HeaderArgError::BadValue(_))
        ));
    }
}
