//! Generated gRPC types for the protos the mesh defines itself.
//!
//! `istio::v1::auth` is Istio's certificate service
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`), served by the
//! control plane and called by proxies to obtain their workload certificates.

/// Istio's package tree, mirrored so generated paths match the proto packages.
pub mod istio {
    pub mod v1 {
        pub mod auth {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("istio.v1.auth");
        }
    }
}
