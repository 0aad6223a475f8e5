//! The item and asset an upload writes to, created when they do not exist yet.
//!
//! Only ever created: docs/protocol.md warns that a PUT over an existing asset replaces it and resets
//! its file, so what exists (ours from an earlier run, or someone's hand-made item) is left as it
//! is, whatever its metadata.

use serde_json::Value;
use tracing::{info, warn};

use super::error::UploadError;
use stac_client::{AssetTarget, IdempotencyKey, ItemCreate, StacClient};

/// The bodies of the objects to create when missing, rendered for one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewObjects {
    /// A STAC Item, for `PUT collections/{c}/items/{i}` (ignored for a collection asset).
    pub item: Option<Value>,
    /// The asset's metadata, for `PUT` of the asset path.
    pub asset: Option<Value>,
}

impl NewObjects {
    /// Nothing to create: no request is made at all.
    pub fn is_empty(&self) -> bool {
        self.item.is_none() && self.asset.is_none()
    }
}

/// What [`ensure_objects`] created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectsReport {
    /// The item did not exist and was created.
    pub item_created: bool,
    /// The asset did not exist and was created.
    pub asset_created: bool,
}

/// Creates the target's item (when `objects.item` is given and the target has an item) and then
/// its asset (when `objects.asset` is given), each only if a fresh `GET` answers 404.
///
/// Errors are the client's, classified as for an upload: a 400 carries the server's
/// description, gateway errors and timeouts are retryable.
pub async fn ensure_objects(
    client: &StacClient,
    target: &AssetTarget,
    objects: &NewObjects,
) -> Result<ObjectsReport, UploadError> {
    let mut report = ObjectsReport::default();
    // Created atomically on the server: a concurrent creator (another job, another instance)
    // gets "already exists" and neither replaces the other's item.
    if let (Some(body), Some(item)) = (&objects.item, &target.item)
        && create_item_if_missing(client, &target.collection, item, body).await?
    {
        info!(collection = %target.collection, item = %item, "item created");
        report.item_created = true;
    }
    if let Some(body) = &objects.asset {
        let created = async {
            if client.get_asset(target).await?.is_some() {
                return Ok(false);
            }
            client.put_asset(target, body).await.map(|_| true)
        }
        .await;
        match created {
            Ok(created) => {
                if created {
                    info!(asset = %target, "asset created");
                }
                report.asset_created = created;
            }
            Err(e) => {
                if report.item_created
                    && let Some(item) = &target.item
                {
                    remove_empty_item(client, &target.collection, item, &[]).await;
                }
                return Err(e.into());
            }
        }
    }
    Ok(report)
}

/// Creates an item when it is missing; `true` when this call created it, `false` when it was
/// there already (whoever made it: an existing item is never replaced).
///
/// The server's atomic create ([`StacClient::create_item`]): of two creators, wherever they
/// run, one gets `Created` and the other `AlreadyExists`. One key per call; a retry of the run
/// makes a new call, which a create whose answer was lost meets as `AlreadyExists`.
pub async fn create_item_if_missing(
    client: &StacClient,
    collection: &str,
    item: &str,
    body: &Value,
) -> Result<bool, UploadError> {
    // The common case, an item that exists, costs one read; the create that follows a miss is
    // the atomic one, so a creator racing in between is answered "exists", never replaced.
    if client.get_item(collection, item).await?.is_some() {
        return Ok(false);
    }
    let key = IdempotencyKey::new();
    match client.create_item(collection, item, body, &key).await? {
        ItemCreate::Created => Ok(true),
        ItemCreate::AlreadyExists => Ok(false),
    }
}

/// Deletes an item this run created and could fill with none of its files: an item without
/// its product would stay on the server (and in its listings) for nothing. `own_assets` are the
/// ids the run was to fill: those it created without ever storing a file are deleted first (the
/// server refuses to delete an item that still has assets). An item that holds a file by now, or
/// an asset that is not the run's (someone else's), is left alone, and so is the item. Failures
/// are logged: the run's own error is what it reports.
pub async fn remove_empty_item(
    client: &StacClient,
    collection: &str,
    item: &str,
    own_assets: &[String],
) {
    let assets = match client.get_item(collection, item).await {
        Ok(Some(v)) => v
            .get("assets")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        Ok(None) => return,
        Err(e) => {
            warn!(collection = %collection, item = %item, error = %e, "cannot read the item this run created, to delete it again as it holds none of the files it was made for");
            return;
        }
    };
    let holds_file = |a: &Value| {
        ["file:checksum", "checksum:multihash"].iter().any(|k| {
            a.get(*k)
                .and_then(Value::as_str)
                .is_some_and(|c| !c.is_empty())
        })
    };
    if let Some((id, _)) = assets
        .iter()
        .find(|(id, a)| !own_assets.contains(id) || holds_file(a))
    {
        info!(collection = %collection, item = %item, asset = %id, "the item this run created holds a file or someone else's asset by now; left as it is");
        return;
    }
    for id in assets.keys() {
        let target = AssetTarget::item_asset(collection, item, id.as_str());
        if let Err(e) = client.delete_asset(&target).await {
            warn!(asset = %target, error = %e, "an asset this run created holds no file and could not be deleted, so neither can its item");
            return;
        }
        info!(asset = %target, "asset created by this run deleted again: it holds no file");
    }
    match client.delete_item(collection, item).await {
        Ok(()) => {
            info!(collection = %collection, item = %item, "item created by this run deleted again: it holds none of the files it was made for")
        }
        Err(e) => {
            warn!(collection = %collection, item = %item, error = %e, "the item this run created holds no file and could not be deleted again")
        }
    }
}
