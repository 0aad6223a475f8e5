//! The item and asset an upload writes to, created when they do not exist yet.
//!
//! Only ever created: docs/protocol.md warns that a PUT over an existing asset replaces it and resets
//! its file, so what exists (ours from an earlier run, or someone's hand-made item) is left as it
//! is, whatever its metadata.

use serde_json::Value;
use tracing::info;

use super::error::UploadError;
use crate::stac::{AssetTarget, StacClient};

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
    pub item_created: bool,
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
    if let (Some(body), Some(item)) = (&objects.item, &target.item)
        && client.get_item(&target.collection, item).await?.is_none()
    {
        client.put_item(&target.collection, item, body).await?;
        info!(collection = %target.collection, item = %item, "item created");
        report.item_created = true;
    }
    if let Some(body) = &objects.asset
        && client.get_asset(target).await?.is_none()
    {
        client.put_asset(target, body).await?;
        info!(asset = %target, "asset created");
        report.asset_created = true;
    }
    Ok(report)
}
