//! TLS for connections to the nodes' client connector, with rustls (via tokio-rustls) and the
//! ring crypto provider. The trust anchors come only from the configured CA file, so a test or
//! private cluster with its own CA works without touching system roots.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};

/// A connector trusting the certificates in `ca_file` (PEM, one or more certificates).
pub(crate) fn connector(ca_file: &Path) -> Result<TlsConnector> {
    let tls_error = |message: String| Error::Tls {
        address: "(configuration)".to_string(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca_file).map_err(|error| {
        tls_error(format!(
            "cannot read CA file {}: {error}",
            ca_file.display()
        ))
    })?;
    for certificate in certificates {
        let certificate = certificate.map_err(|error| {
            tls_error(format!("bad certificate in {}: {error}", ca_file.display()))
        })?;
        roots.add(certificate).map_err(|error| {
            tls_error(format!(
                "unusable certificate in {}: {error}",
                ca_file.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(tls_error(format!(
            "no certificates in CA file {}",
            ca_file.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| tls_error(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
