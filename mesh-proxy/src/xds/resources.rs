//! The xDS resources as received, kept encoded with their versions; in `xds`
//! because the compiler and the ADS client use them, not only `/config_dump`.
//!
//! Encoded ([`Encoded`]) because a decoded Envoy message takes KiBs of heap
//! where its protobuf bytes take a few hundred, and only `/config_dump` and
//! the xDS client's recompiles read them: they are decoded on demand.

use std::marker::PhantomData;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use prost::{Message, Name};

use crate::model::ResourceVersion;

/// A protobuf message of type `T`, kept as its encoding. Clones share the
/// bytes.
pub struct Encoded<T> {
    bytes: Bytes,
    message: PhantomData<fn() -> T>,
}

/// Stored bytes that do not decode as their type. They were decoded (or
/// encoded) before being stored, so this means memory went bad or a caller
/// stored unchecked bytes; still an error, never a panic.
#[derive(Debug, thiserror::Error)]
#[error("stored {type_name} does not decode: {source}")]
pub struct StoredResourceError {
    pub type_name: String,
    #[source]
    pub source: prost::DecodeError,
}

impl<T> Encoded<T> {
    /// Bytes that hold a `T` (an ADS `Any.value`), kept as they are. The
    /// caller has checked that they decode.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Encoded {
            bytes,
            message: PhantomData,
        }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl<T: Message + Name + Default> Encoded<T> {
    pub fn encode(message: &T) -> Self {
        Self::from_bytes(Bytes::from(message.encode_to_vec()))
    }

    pub fn decode(&self) -> Result<T, StoredResourceError> {
        T::decode(self.bytes.clone()).map_err(|source| StoredResourceError {
            type_name: T::full_name(),
            source,
        })
    }
}

impl<T> Clone for Encoded<T> {
    fn clone(&self) -> Self {
        Self::from_bytes(self.bytes.clone())
    }
}

/// Byte equality: the same encoding is the same message. (Equal messages
/// may still encode differently, e.g. map entries in another order.)
impl<T> PartialEq for Encoded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Encoded<T> {}

impl<T> std::fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = std::any::type_name::<T>();
        let short = name.rsplit("::").next().unwrap_or(name);
        write!(f, "Encoded<{short}>({} bytes)", self.bytes.len())
    }
}

/// A resource as received, with its version.
#[derive(Debug)]
pub struct Versioned<T> {
    pub resource: Encoded<T>,
    pub version: ResourceVersion,
}

impl<T> Clone for Versioned<T> {
    fn clone(&self) -> Self {
        Versioned {
            resource: self.resource.clone(),
            version: self.version.clone(),
        }
    }
}

impl<T: Message + Name + Default> Versioned<T> {
    /// Encodes `resource` to keep it.
    pub fn new(resource: &T, version: ResourceVersion) -> Self {
        Versioned {
            resource: Encoded::encode(resource),
            version,
        }
    }
}

/// Raw xDS resources of one origin (static from the bootstrap, or dynamic
/// from ADS), as they were received.
#[derive(Debug, Clone, Default)]
pub struct XdsResources {
    pub listeners: Vec<Versioned<Listener>>,
    pub routes: Vec<Versioned<RouteConfiguration>>,
    pub clusters: Vec<Versioned<Cluster>>,
    pub endpoints: Vec<Versioned<ClusterLoadAssignment>>,
    pub secrets: Vec<Versioned<Secret>>,
    /// `version_info` of the last accepted LDS response (dynamic only).
    pub listeners_version: String,
    /// `version_info` of the last accepted CDS response (dynamic only).
    pub clusters_version: String,
}
