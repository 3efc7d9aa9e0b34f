//! The control plane: watches Istio configuration, builds the service
//! registry, translates both into Envoy xDS v3 resources and serves them to
//! every proxy over ADS, tracking which proxy holds which version.
