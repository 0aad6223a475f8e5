//! The client's media-type table (`stac_client::rules::MEDIA_TYPES`, which job files are
//! checked against) and the emulator's (the server's `MEDIA_TYPES`) say the same: every type and
//! extension one accepts, the other accepts, through its own checks and, for the emulator, over
//! HTTP. A type added to one table only fails here instead of passing `check` and failing on
//! the server, or the other way round.

use std::collections::BTreeSet;

use serde_json::json;
use stac_client::AssetTarget;
use stac_client::rules::{self, MEDIA_TYPES};
use stac_uploadd_emulator::AssetKey;

use crate::fixtures::*;

/// Every (media type, extension) pair of a table.
fn pairs<'a>(table: impl Iterator<Item = (&'a str, &'a [&'a str])>) -> BTreeSet<(String, String)> {
    table
        .flat_map(|(name, exts)| exts.iter().map(move |e| (name.to_owned(), (*e).to_owned())))
        .collect()
}

#[test]
fn the_client_and_the_emulator_have_the_same_media_type_table() {
    let client = pairs(MEDIA_TYPES.iter().map(|t| (t.name, t.extensions)));
    let emulator = pairs(stac_uploadd_emulator::media_types());
    assert!(client.len() > 50, "the client's table: {client:?}");
    let only_client: Vec<_> = client.difference(&emulator).collect();
    let only_emulator: Vec<_> = emulator.difference(&client).collect();
    assert!(
        only_client.is_empty() && only_emulator.is_empty(),
        "only the client accepts {only_client:?}; only the emulator accepts {only_emulator:?}"
    );
}

#[tokio::test]
async fn every_media_type_the_client_accepts_the_emulator_accepts_and_back() {
    let env = start().await;
    // The item the assets go into.
    env.item_asset("seed.zip");
    let both = pairs(MEDIA_TYPES.iter().map(|t| (t.name, t.extensions)))
        .union(&pairs(stac_uploadd_emulator::media_types()))
        .cloned()
        .collect::<Vec<_>>();
    let mut refused = Vec::new();
    for (n, (media_type, ext)) in both.iter().enumerate() {
        let id = format!("asset-{n}{ext}");
        if let Err(e) = rules::check_asset_id(&id, Some(media_type)) {
            refused.push(format!("client: {id} as {media_type}: {e}"));
        }
        let target = AssetTarget::item_asset("ch.test.collection", "item-1", &id);
        if let Err(e) = env
            .client
            .put_asset(&target, &json!({ "id": id, "type": media_type }))
            .await
        {
            refused.push(format!("emulator: {id} as {media_type}: {e}"));
        }
    }
    assert!(refused.is_empty(), "refused: {refused:#?}");

    // Both refuse what the server's table lacks: the checks above can fail.
    let unknown = "application/x.unknown";
    assert!(rules::check_media_type(unknown).is_err());
    let key = AssetKey::item_asset("ch.test.collection", "item-1", "unknown.zip");
    assert!(env.emu.create_asset(&key, unknown).is_err());
}
