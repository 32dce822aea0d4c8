//! A per-tenant lease on object storage, so two compactors never merge the same blocks.
//!
//! The lease is one small object, `<tenant>/compactor.lease`, naming its holder and expiry. It is taken with a
//! conditional PUT: create-if-absent, or replace-if-unchanged (ETag) once expired or when renewing, which S3 and
//! MinIO make atomic. A holder renews it right before publishing, so one that was too slow (its lease taken over)
//! publishes nothing. Local disks have no ETag-conditional replace: there, an expired lease is overwritten, which
//! is safe for the single process a local directory serves.

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::{BlockStore, StorageError};
use crate::model::Tenant;

const LEASE_OBJECT: &str = "compactor.lease";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    owner: String,
    expires_unix_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl BlockStore {
    /// Takes or renews the tenant's compaction lease for `ttl_ms`; false when another holder has it.
    pub async fn acquire_lease(&self, tenant: &Tenant, owner: &str, ttl_ms: u64) -> Result<bool, StorageError> {
        let path = Path::from_iter([tenant.as_str(), LEASE_OBJECT]);
        let store = self.object_store();
        let body = serde_json::to_vec(&Lease { owner: owner.to_string(), expires_unix_ms: now_ms() + ttl_ms })?;
        let mode = match store.get(&path).await {
            Err(object_store::Error::NotFound { .. }) => PutMode::Create,
            Err(e) => return Err(StorageError::ObjectStore(e)),
            Ok(r) => {
                let version = UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
                let current: Option<Lease> = r.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok());
                let free = current.is_none_or(|l| l.owner == owner || l.expires_unix_ms < now_ms());
                if !free {
                    return Ok(false);
                }
                PutMode::Update(version)
            }
        };
        let put = |mode: PutMode| {
            let store = store.clone();
            let (path, body) = (path.clone(), body.clone());
            async move { store.put_opts(&path, PutPayload::from(body), PutOptions::from(mode)).await }
        };
        match put(mode).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => {
                put(PutMode::Overwrite).await.map_err(StorageError::ObjectStore)?;
                Ok(true)
            }
            Err(e) => Err(StorageError::ObjectStore(e)),
        }
    }

    /// Gives the lease up early (best effort: it expires anyway).
    pub async fn release_lease(&self, tenant: &Tenant, owner: &str) {
        let path = Path::from_iter([tenant.as_str(), LEASE_OBJECT]);
        let store = self.object_store();
        if let Ok(r) = store.get(&path).await
            && let Ok(b) = r.bytes().await
            && serde_json::from_slice::<Lease>(&b).is_ok_and(|l| l.owner == owner)
        {
            let _ = store.delete(&path).await;
        }
    }
}
