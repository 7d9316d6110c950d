//! [`Storage`] in S3-compatible object storage, through `object_store`:
//! objects named by their GOPROXY path under the bucket's prefix (so the
//! bucket is a GOPROXY tree too). A create-only write is one PUT with
//! `If-None-Match: *`; a compare-and-swap is one PUT with `If-Match` on the
//! ETag read; either appears only complete. Credentials go to the client
//! and nowhere else: [`S3Storage::describe`] names only the bucket.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    Certificate, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, UpdateVersion, WriteMultipart,
};

use super::{
    BoxFuture, Listed, Object, Storage, StorageError, Swapped, Version, Written, checked,
    checked_prefix,
};

/// Where the bucket is and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Inside the bucket, without slashes at either end ("" for none).
    pub prefix: String,
    /// `None`: the provider's default for the region.
    pub endpoint: Option<String>,
    pub region: String,
    /// `bucket` in the path rather than the host name.
    pub path_style: bool,
    /// Plain http:// endpoints (a test or lab server).
    pub allow_http: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `upstream.ca_file`: roots trusted beside the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Settings(s3://{}/{})", self.bucket, self.prefix)
    }
}

pub struct S3Storage {
    store: AmazonS3,
    place: String,
    prefix: String,
}

impl S3Storage {
    pub fn new(settings: &S3Settings) -> Result<S3Storage, StorageError> {
        let place = format!("s3://{}/{}", settings.bucket, settings.prefix);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_allow_http(settings.allow_http)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            // A few quick retries: a client waits on the bucket at most
            // cache.shared_timeout anyway, and an upload that keeps
            // failing is dropped rather than holding a slot for minutes.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(30),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let failed = |detail: String| StorageError::Failed {
            place: place.clone(),
            what: "configure",
            name: String::new(),
            detail,
        };
        if let Some(file) = &settings.ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| failed(format!("upstream.ca_file {}: {e}", file.display())))?;
            let mut options = ClientOptions::new();
            for root in Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))? {
                options = options.with_root_certificate(root);
            }
            builder = builder.with_client_options(options);
        }
        let store = builder.build().map_err(|e| failed(e.to_string()))?;
        Ok(S3Storage {
            store,
            place,
            prefix: settings.prefix.trim_matches('/').to_string(),
        })
    }

    /// The object path of `name` (checked) under the prefix.
    fn path(&self, name: &str) -> Result<Path, StorageError> {
        let name = checked(name)?;
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        };
        Path::parse(&full).map_err(|_| StorageError::BadName(name.to_string()))
    }

    /// `name` back from an object path under the prefix.
    fn name_of(&self, path: &Path) -> Option<String> {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            return Some(full.to_string());
        }
        full.strip_prefix(&self.prefix)?
            .strip_prefix('/')
            .map(str::to_string)
    }

    fn failed(&self, what: &'static str, name: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Failed {
            place: self.place.clone(),
            what,
            name: name.to_string(),
            detail: e.to_string(),
        }
    }

    async fn put(
        &self,
        name: &str,
        data: Bytes,
        mode: PutMode,
    ) -> Result<Option<Version>, StorageError> {
        let path = self.path(name)?;
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(data), options)
            .await
        {
            Ok(put) => Ok(Some(Version(put.e_tag.unwrap_or_default()))),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(None),
            Err(e) => Err(self.failed("write", name, e)),
        }
    }
}

impl S3Storage {
    /// `length` bytes of the local `file` from `offset`, read on the
    /// blocking pool, for the upload of `name`.
    async fn piece(
        &self,
        name: &str,
        file: &Arc<File>,
        offset: u64,
        length: usize,
    ) -> Result<Bytes, StorageError> {
        let file = file.clone();
        match tokio::task::spawn_blocking(move || super::read_piece(&file, offset, length)).await {
            Ok(Ok(piece)) => Ok(piece),
            Ok(Err(e)) => Err(self.failed("read for upload", name, e)),
            Err(e) => Err(self.failed("read for upload", name, e)),
        }
    }

    /// A multipart upload of `file`'s first `size` bytes, a piece at a
    /// time; aborted (never visible) if a piece fails.
    async fn upload(&self, name: &str, file: Arc<File>, size: u64) -> Result<(), StorageError> {
        let path = self.path(name)?;
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.failed("write", name, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, super::PIECE);
        let mut offset = 0;
        while offset < size {
            let length = (size - offset).min(super::PIECE as u64) as usize;
            let piece = match self.piece(name, &file, offset, length).await {
                Ok(piece) => piece,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            if let Err(e) = writer.wait_for_capacity(2).await {
                return Err(self.failed("write", name, e));
            }
            writer.put(piece);
            offset += length as u64;
        }
        writer
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| self.failed("write", name, e))
    }
}

impl Storage for S3Storage {
    fn describe(&self) -> String {
        self.place.clone()
    }

    fn get<'a>(
        &'a self,
        name: &'a str,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<Option<Object>, StorageError>> {
        Box::pin(async move {
            let path = self.path(name)?;
            let options = GetOptions {
                range: range.filter(|r| !r.is_empty()).map(GetRange::Bounded),
                ..GetOptions::default()
            };
            let got = match self.store.get_opts(&path, options).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.failed("read", name, e)),
            };
            let meta = got.meta.clone();
            let (place, owned) = (self.place.clone(), name.to_string());
            let body = got.into_stream().map_err(move |e| StorageError::Failed {
                place: place.clone(),
                what: "read",
                name: owned.clone(),
                detail: e.to_string(),
            });
            Ok(Some(Object {
                size: meta.size,
                version: Version(meta.e_tag.unwrap_or_default()),
                modified: meta.last_modified.into(),
                body: Box::pin(body),
            }))
        })
    }

    fn put_new<'a>(
        &'a self,
        name: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Written, StorageError>> {
        Box::pin(async move {
            Ok(match self.put(name, data, PutMode::Create).await? {
                Some(_) => Written::Created,
                None => Written::Existed,
            })
        })
    }

    fn put_file<'a>(
        &'a self,
        name: &'a str,
        file: Arc<File>,
        size: u64,
    ) -> BoxFuture<'a, Result<Written, StorageError>> {
        Box::pin(async move {
            if size <= super::PIECE as u64 {
                let data = self.piece(name, &file, 0, size as usize).await?;
                return self.put_new(name, data).await;
            }
            // A multipart upload cannot be made conditional: look first.
            let path = self.path(name)?;
            match self.store.head(&path).await {
                Ok(_) => return Ok(Written::Existed),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("read", name, e)),
            }
            self.upload(name, file, size)
                .await
                .map(|()| Written::Created)
        })
    }

    fn swap<'a>(
        &'a self,
        name: &'a str,
        expected: Option<&'a Version>,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Swapped, StorageError>> {
        Box::pin(async move {
            let mode = match expected {
                None => PutMode::Create,
                Some(version) => PutMode::Update(UpdateVersion {
                    e_tag: Some(version.0.clone()),
                    version: None,
                }),
            };
            Ok(match self.put(name, data, mode).await? {
                Some(version) => Swapped::Done(version),
                None => Swapped::Conflict,
            })
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let path = self.path(name)?;
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.failed("delete", name, e)),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, StorageError>> {
        Box::pin(async move {
            let prefix = checked_prefix(prefix)?.trim_end_matches('/');
            let under = match (self.prefix.is_empty(), prefix.is_empty()) {
                (true, true) => None,
                (true, false) => Some(prefix.to_string()),
                (false, true) => Some(self.prefix.clone()),
                (false, false) => Some(format!("{}/{prefix}", self.prefix)),
            };
            let under = under.map(Path::from);
            let mut listing = self.store.list(under.as_ref());
            let mut listed = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| self.failed("list", prefix, e))?;
                if let Some(name) = self.name_of(&meta.location) {
                    listed.push(Listed {
                        name,
                        size: meta.size,
                        modified: meta.last_modified.into(),
                    });
                }
            }
            Ok(listed)
        })
    }
}
