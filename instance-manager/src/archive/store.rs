//! Opening an object store from a [`StoreSpec`], and the few operations the archive and
//! backups need on it, with errors that say what to fix. One client per manager, kept for
//! its whole life (connections are reused).
//!
//! Credentials come from the files the spec names (mounted Secrets) or from each cloud's
//! standard environment variables; they are never logged or shown in errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::cipher::{self, Cipher};
use super::destination::{self, Destination, Scheme};
use super::layout::Layout;
use crate::api::StoreSpec;

/// A store that cannot be opened or used, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A setting is wrong.
    #[error("{field}: {message} (fix: {hint})")]
    Config {
        /// The field (`backup.store.destination`).
        field: String,
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: String,
    },
    /// The store answered with an error, or could not be reached.
    #[error("{what} {path} in {store}: {source}")]
    Request {
        /// What was attempted.
        what: &'static str,
        /// The object.
        path: String,
        /// The store.
        store: String,
        /// The client's error (boxed: it is large).
        source: Box<object_store::Error>,
    },
    /// An encrypted object, and no key to open it.
    #[error("{store} holds encrypted objects: set encryption.keyFile to the key they were written with")]
    NoKey {
        /// The store.
        store: String,
    },
}

impl StoreError {
    fn config(field: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Config { field: field.into(), message: message.into(), hint: hint.into() }
    }

    /// Whether the object did not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Request { source, .. } if matches!(**source, object_store::Error::NotFound { .. }))
    }
}

/// An open store, rooted at one cluster's objects.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Where this cluster's objects are.
    pub layout: Layout,
    destination: Destination,
    cipher: Option<Arc<Cipher>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.destination)
    }
}

/// Timeouts: a stuck request fails and is retried rather than holding an archive worker.
fn client_options(spec: &StoreSpec, field: &str) -> Result<object_store::ClientOptions, StoreError> {
    let mut options = object_store::ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120))
        .with_pool_idle_timeout(Duration::from_secs(60));
    if let Some(ca) = spec.s3.as_ref().and_then(|s| s.ca_file.as_ref()) {
        let pem = std::fs::read(ca).map_err(|e| {
            StoreError::config(field, format!("cannot read {}: {e}", ca.display()), "mount the CA file")
        })?;
        let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            StoreError::config(
                field,
                format!("{} is not PEM: {e}", ca.display()),
                "use a PEM bundle of CA certificates",
            )
        })?;
        if certs.is_empty() {
            return Err(StoreError::config(field, format!("{} holds no certificate", ca.display()), "use a PEM file"));
        }
        for cert in certs {
            options = options.with_root_certificate(cert);
        }
    }
    Ok(options)
}

fn secret(field: &str, path: &std::path::Path) -> Result<String, StoreError> {
    crate::osuser::read_secret(path)
        .map(|s| s.expose().to_string())
        .map_err(|e| StoreError::config(field, e.to_string(), "mount the Secret there, or fix the path"))
}

/// Checks `spec` without touching the network or writing anything: the destination, that
/// only its store's section is set, that the credential and CA files can be read.
pub fn check(spec: &StoreSpec, field: &str) -> Result<Destination, StoreError> {
    let dest = destination::parse(&spec.destination).map_err(|e| StoreError::Config {
        field: format!("{field}.destination"),
        message: e.message,
        hint: e.hint,
    })?;
    let files = [
        spec.s3.as_ref().and_then(|s| s.access_key_id_file.clone()).map(|f| ("s3.accessKeyIdFile", f)),
        spec.s3.as_ref().and_then(|s| s.secret_access_key_file.clone()).map(|f| ("s3.secretAccessKeyFile", f)),
        spec.s3.as_ref().and_then(|s| s.session_token_file.clone()).map(|f| ("s3.sessionTokenFile", f)),
        spec.azure.as_ref().and_then(|s| s.account_key_file.clone()).map(|f| ("azure.accountKeyFile", f)),
        spec.azure.as_ref().and_then(|s| s.sas_token_file.clone()).map(|f| ("azure.sasTokenFile", f)),
    ];
    for (name, file) in files.into_iter().flatten() {
        secret(&format!("{field}.{name}"), &file)?;
    }
    client_options(spec, &format!("{field}.s3.caFile"))?;
    cipher_of(spec, field)?;
    Ok(dest)
}

fn cipher_of(spec: &StoreSpec, field: &str) -> Result<Option<Arc<Cipher>>, StoreError> {
    let Some(e) = &spec.encryption else { return Ok(None) };
    Cipher::from_key_file(&e.key_file).map(|c| Some(Arc::new(c))).map_err(|e| {
        StoreError::config(&format!("{field}.encryption.keyFile"), e.to_string(), "mount the key Secret there")
    })
}

/// Opens the store `spec` describes for `cluster`. `field` names the spec in errors
/// (`backup.store`, `bootstrap.recovery.store`). Nothing is sent over the network; a
/// `file://` directory is created.
pub fn open(spec: &StoreSpec, cluster: &str, field: &str) -> Result<Store, StoreError> {
    let dest = check(spec, field)?;
    let wrong_section = |section: &str| {
        StoreError::config(
            &format!("{field}.{section}"),
            format!("is set but the destination is {}://", dest.scheme.as_str()),
            format!("remove {section}, or change the destination"),
        )
    };
    if spec.s3.is_some() && dest.scheme != Scheme::S3 {
        return Err(wrong_section("s3"));
    }
    if spec.gcs.is_some() && dest.scheme != Scheme::Gcs {
        return Err(wrong_section("gcs"));
    }
    if spec.azure.is_some() && dest.scheme != Scheme::Azure {
        return Err(wrong_section("azure"));
    }
    let build_err = |e: object_store::Error| {
        StoreError::config(field, format!("cannot configure the client: {e}"), "check the store settings")
    };
    let inner: Arc<dyn ObjectStore> = match dest.scheme {
        Scheme::File => {
            let dir = dest.dir.clone().unwrap_or_default();
            std::fs::create_dir_all(&dir).map_err(|e| {
                StoreError::config(
                    &format!("{field}.destination"),
                    format!("cannot create {}: {e}", dir.display()),
                    "use a writable directory",
                )
            })?;
            super::local::prepare(&dir, Layout::new(&dest.prefix, cluster).root().as_ref()).map_err(|e| {
                StoreError::config(
                    &format!("{field}.destination"),
                    format!("cannot create a private directory for {cluster} in {}: {e}", dir.display()),
                    "use a directory this user owns",
                )
            })?;
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(build_err)?)
        }
        Scheme::S3 => {
            let s3 = spec.s3.clone().unwrap_or_default();
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&dest.bucket)
                .with_region(s3.region.as_deref().unwrap_or("us-east-1"))
                .with_virtual_hosted_style_request(s3.virtual_hosted_style)
                .with_client_options(client_options(spec, &format!("{field}.s3.caFile"))?);
            if let Some(endpoint) = &s3.endpoint {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(StoreError::config(
                        &format!("{field}.s3.endpoint"),
                        format!("{endpoint:?} is not an http(s) URL"),
                        "write it as https://HOST:PORT",
                    ));
                }
                b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
            }
            if let Some(f) = &s3.access_key_id_file {
                b = b.with_access_key_id(secret(&format!("{field}.s3.accessKeyIdFile"), f)?);
            }
            if let Some(f) = &s3.secret_access_key_file {
                b = b.with_secret_access_key(secret(&format!("{field}.s3.secretAccessKeyFile"), f)?);
            }
            if let Some(f) = &s3.session_token_file {
                b = b.with_token(secret(&format!("{field}.s3.sessionTokenFile"), f)?);
            }
            Arc::new(b.build().map_err(build_err)?)
        }
        Scheme::Gcs => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&dest.bucket)
                .with_client_options(client_options(spec, field)?);
            if let Some(f) = spec.gcs.as_ref().and_then(|g| g.service_account_file.as_ref()) {
                if !f.is_file() {
                    return Err(StoreError::config(
                        &format!("{field}.gcs.serviceAccountFile"),
                        format!("{} does not exist", f.display()),
                        "mount the service account key there, or fix the path",
                    ));
                }
                b = b.with_service_account_path(f.to_string_lossy());
            }
            Arc::new(b.build().map_err(build_err)?)
        }
        Scheme::Azure => {
            let az = spec.azure.clone().unwrap_or_default();
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&dest.bucket)
                .with_client_options(client_options(spec, field)?);
            if let Some(account) = &az.account_name {
                b = b.with_account(account);
            }
            if let Some(f) = &az.account_key_file {
                b = b.with_access_key(secret(&format!("{field}.azure.accountKeyFile"), f)?);
            }
            if let Some(f) = &az.sas_token_file {
                let token = secret(&format!("{field}.azure.sasTokenFile"), f)?;
                let pairs: Vec<(String, String)> =
                    url::form_urlencoded::parse(token.trim_start_matches('?').as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                b = b.with_sas_authorization(pairs);
            }
            if let Some(endpoint) = &az.endpoint {
                b = b.with_endpoint(endpoint.clone()).with_allow_http(endpoint.starts_with("http://"));
            }
            Arc::new(b.build().map_err(build_err)?)
        }
    };
    let layout = Layout::new(&dest.prefix, cluster);
    let cipher = cipher_of(spec, field)?;
    Ok(Store { inner, layout, destination: dest, cipher })
}

/// What a create-only upload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object was written.
    Written,
    /// An object of that name already existed; nothing was written.
    AlreadyExists,
}

impl Store {
    /// The destination, for logs and status (never holds credentials).
    pub fn describe(&self) -> String {
        self.destination.to_string()
    }

    /// The encryption key, when objects are encrypted.
    pub fn cipher(&self) -> Option<&Arc<Cipher>> {
        self.cipher.as_ref()
    }

    /// The key that opens `object`: `None` for a plain object, an error for an encrypted one
    /// when no key is configured.
    pub fn opener(&self, object: &[u8]) -> Result<Option<&Cipher>, StoreError> {
        if !cipher::is_sealed(object) {
            return Ok(None);
        }
        match &self.cipher {
            Some(c) => Ok(Some(c)),
            None => Err(StoreError::NoKey { store: self.describe() }),
        }
    }

    /// The underlying client (multipart uploads, listing).
    pub fn client(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn request_err(&self, what: &'static str, path: &Path) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        let path = path.to_string();
        move |source| StoreError::Request { what, path, store: self.describe(), source: Box::new(source) }
    }

    /// Writes `data` at `path` only if nothing is there: archived WAL is never overwritten.
    pub async fn create(&self, path: &Path, data: impl Into<PutPayload>) -> Result<Created, StoreError> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.inner.put_opts(path, data.into(), opts).await {
            Ok(_) => self.seal(path).map(|()| Created::Written),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(self.request_err("cannot write", path)(e)),
        }
    }

    /// Writes `data` at `path`, replacing what is there (descriptions, never WAL).
    pub async fn overwrite(&self, path: &Path, data: Bytes) -> Result<(), StoreError> {
        self.inner.put(path, PutPayload::from_bytes(data)).await.map_err(self.request_err("cannot write", path))?;
        self.seal(path)
    }

    /// Makes a written object of a `file://` store private (0600, its directories 0700:
    /// [`super::local`]); nothing for other stores.
    pub fn seal(&self, path: &Path) -> Result<(), StoreError> {
        let Some(dir) = &self.destination.dir else { return Ok(()) };
        super::local::seal(dir, path.as_ref()).map_err(|e| StoreError::Config {
            field: "backup.store.destination".into(),
            message: format!("cannot make {path} private in {}: {e}", self.describe()),
            hint: "give the manager's user ownership of the directory".into(),
        })
    }

    /// Removes what interrupted uploads left in a `file://` store (`<object>#<n>` files not
    /// written to for `idle`); nothing for other stores, which expire their own.
    pub fn sweep_staged(&self, idle: std::time::Duration) {
        let Some(dir) = &self.destination.dir else { return };
        match super::local::sweep_staged(&dir.join(self.layout.root().as_ref()), idle) {
            Ok(removed) => {
                for path in removed {
                    tracing::info!(file = %path.display(), "removed what an interrupted upload left");
                }
            }
            Err(e) => tracing::warn!(destination = %self.describe(), error = %e, "cannot sweep interrupted uploads"),
        }
    }

    /// Reads a whole object; `None` when it does not exist.
    pub async fn get(&self, path: &Path) -> Result<Option<Bytes>, StoreError> {
        let result = match self.inner.get(path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.request_err("cannot read", path)(e)),
        };
        result.bytes().await.map(Some).map_err(self.request_err("cannot read", path))
    }

    /// Whether an object exists at `path`.
    pub async fn exists(&self, path: &Path) -> Result<bool, StoreError> {
        match self.inner.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.request_err("cannot look at", path)(e)),
        }
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(Some(prefix)).try_collect().await.map_err(self.request_err("cannot list", prefix))
    }

    /// The objects directly under `prefix` and the names of its sub-directories.
    pub async fn list_dir(&self, prefix: &Path) -> Result<(Vec<ObjectMeta>, Vec<Path>), StoreError> {
        let r = self.inner.list_with_delimiter(Some(prefix)).await.map_err(self.request_err("cannot list", prefix))?;
        Ok((r.objects, r.common_prefixes))
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.request_err("cannot delete", path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::S3Spec;

    fn spec(destination: &str) -> StoreSpec {
        StoreSpec { destination: destination.into(), s3: None, gcs: None, azure: None, encryption: None }
    }

    fn config_error(r: Result<Store, StoreError>) -> String {
        match r {
            Err(e @ StoreError::Config { .. }) => e.to_string(),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn file_store_creates_once_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let dest = format!("file://{}/archive", dir.path().display());
        let store = open(&spec(&dest), "main", "backup.store").unwrap();
        let path = store.layout.wal_object("000000010000000000000001", crate::api::Compression::None).unwrap();
        assert_eq!(store.create(&path, Bytes::from_static(b"one")).await.unwrap(), Created::Written);
        assert_eq!(store.create(&path, Bytes::from_static(b"two")).await.unwrap(), Created::AlreadyExists);
        assert_eq!(store.get(&path).await.unwrap().unwrap(), Bytes::from_static(b"one"));
        let on_disk = dir.path().join("archive/main/wal/0000000100000000/000000010000000000000001");
        assert_eq!(std::fs::read(on_disk).unwrap(), b"one");
        assert_eq!(store.list(&store.layout.wal_dir()).await.unwrap().len(), 1);
        store.delete(&path).await.unwrap();
        store.delete(&path).await.unwrap();
        assert_eq!(store.get(&path).await.unwrap(), None);
    }

    #[test]
    fn settings_for_another_store_kind_are_refused() {
        let mut s = spec("gs://bucket/x");
        s.s3 = Some(S3Spec::default());
        assert!(
            config_error(open(&s, "c", "backup.store"))
                .contains("backup.store.s3: is set but the destination is gs://")
        );
    }

    #[test]
    fn missing_credential_files_name_the_field() {
        let mut s = spec("s3://bucket/x");
        s.s3 = Some(S3Spec { access_key_id_file: Some("/nonexistent/key".into()), ..Default::default() });
        let e = config_error(open(&s, "c", "backup.store"));
        assert!(e.contains("backup.store.s3.accessKeyIdFile") && e.contains("/nonexistent/key"), "{e}");
        let mut s = spec("s3://bucket/x");
        s.s3 = Some(S3Spec { endpoint: Some("minio:9000".into()), ..Default::default() });
        assert!(config_error(open(&s, "c", "backup.store")).contains("backup.store.s3.endpoint"));
        assert!(config_error(open(&spec("s4://bucket"), "c", "backup.store")).contains("backup.store.destination"));
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "AKIA-SUPER-SECRET\n").unwrap();
        let mut s = spec("s3://bucket/x");
        s.s3 = Some(S3Spec {
            access_key_id_file: Some(key.clone()),
            secret_access_key_file: Some(key),
            endpoint: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        });
        let store = open(&s, "c", "backup.store").unwrap();
        assert!(!format!("{store:?} {}", store.describe()).contains("SUPER-SECRET"));
    }
}
