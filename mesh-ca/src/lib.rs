//! The certificate authority of the mesh: a root (generated or loaded),
//! signing of workload CSRs into SPIFFE X.509 SVIDs, TTLs and the trust bundle.
//! It knows identities, never routing.
