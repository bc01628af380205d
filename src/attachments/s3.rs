//! [`BlobStore`] in an S3-compatible object store (Amazon S3, SeaweedFS, MinIO…) through the
//! AWS SDK for Rust, configured like the DynamoDB client (`storage::dynamo::sdk_config`):
//! the endpoint from `WEBCHAT_S3_ENDPOINT`, region and credentials from the usual AWS
//! variables. Path-style addressing (`<endpoint>/<bucket>/<key>`), which every
//! S3-compatible store serves. Uploads are sent from their temporary file, never from
//! memory; downloads stream, ranges as S3 ranges.

use std::{path::Path, time::Duration};

use async_trait::async_trait;
use aws_sdk_s3::{
    config::{
        retry::RetryConfig, timeout::TimeoutConfig, RequestChecksumCalculation,
        ResponseChecksumValidation,
    },
    error::{DisplayErrorContext, SdkError},
    primitives::ByteStream,
    Client,
};
use tokio_util::io::ReaderStream;

use super::blob::{BlobBody, BlobStore};
use crate::storage::StoreError;

/// [`BlobStore`] over one bucket.
#[derive(Clone, Debug)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
}

fn sdk_error<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            StoreError::Unavailable(format!("S3: {}", DisplayErrorContext(&e)))
        }
        _ => StoreError::Internal(format!("S3: {}", DisplayErrorContext(&e))),
    }
}

impl S3BlobStore {
    /// Connects to `endpoint` and creates `bucket` when it does not exist yet.
    pub async fn connect(endpoint: &str, bucket: &str) -> Result<Self, StoreError> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            // Whole uploads of large files take longer than DynamoDB calls: the bound is on
            // stalls (each attempt), not on the transfer's length.
            .read_timeout(Duration::from_secs(30))
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(50))
            .with_max_backoff(Duration::from_secs(1));
        let shared = crate::storage::dynamo::sdk_config(endpoint, timeouts, retries).await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            // Checksums only where S3 requires them: S3-compatible stores do not all take the
            // SDK's default CRC trailers on every PUT.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        let store = Self {
            client: Client::from_conf(config),
            bucket: bucket.to_owned(),
        };
        store.ensure_bucket().await?;
        Ok(store)
    }

    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created the attachment bucket");
                Ok(())
            }
            // Another node made it meanwhile.
            Err(e)
                if e.as_service_error().is_some_and(|se| {
                    se.is_bucket_already_owned_by_you() || se.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error(e)),
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        content_type: &str,
    ) -> Result<(), StoreError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StoreError::Internal(format!("read {}: {e}", path.display())))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .body(body)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BlobBody>, StoreError> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some((first, last)) = range {
            request = request.range(format!("bytes={first}-{last}"));
        }
        match request.send().await {
            Ok(out) => Ok(Some(Box::pin(ReaderStream::new(
                out.body.into_async_read(),
            )))),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }
}
