//! The client's calls on items and assets (create once, list, delete) against the emulator:
//! what each answers and what the server holds afterwards.

use crate::fixtures::*;
use serde_json::{Value, json};
use stac_client::{AssetTarget, IdempotencyKey, ItemCreate};
use stac_uploadd_emulator::CallKind;

const COLLECTION: &str = "ch.test.items";

fn item_body(title: &str) -> Value {
    json!({
        "geometry": {"type": "Polygon", "coordinates": [[[7.0, 46.0], [8.0, 46.0], [8.0, 47.0], [7.0, 47.0], [7.0, 46.0]]]},
        "properties": {"datetime": "2026-01-01T00:00:00Z", "title": title},
    })
}

async fn title_of(env: &Env, item: &str) -> Option<String> {
    let v = env.client.get_item(COLLECTION, item).await.unwrap()?;
    v["properties"]["title"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn an_item_is_created_once_and_never_replaced() {
    let env = start().await;
    env.emu.create_collection(COLLECTION);
    let first = env
        .client
        .create_item(
            COLLECTION,
            "day-1",
            &item_body("first"),
            &IdempotencyKey::new(),
        )
        .await
        .unwrap();
    assert_eq!(first, ItemCreate::Created);
    let second = env
        .client
        .create_item(
            COLLECTION,
            "day-1",
            &item_body("second"),
            &IdempotencyKey::new(),
        )
        .await
        .unwrap();
    assert_eq!(second, ItemCreate::AlreadyExists);
    assert_eq!(title_of(&env, "day-1").await.as_deref(), Some("first"));
    // Each create went through POST (counted with the other writes of STAC objects), not PUT.
    assert!(
        env.emu
            .requests()
            .iter()
            .filter(|r| r.call == CallKind::PutStac)
            .count()
            >= 2
    );
}

#[tokio::test]
async fn creators_racing_for_one_new_item_get_one_created() {
    let env = start().await;
    env.emu.create_collection(COLLECTION);
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let client = env.client.clone();
            tokio::spawn(async move {
                client
                    .create_item(
                        COLLECTION,
                        "raced",
                        &item_body(&format!("creator {n}")),
                        &IdempotencyKey::new(),
                    )
                    .await
                    .map(|c| (n, c))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (n, created) = t.await.unwrap().unwrap();
        if created == ItemCreate::Created {
            winners.push(n);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let title = title_of(&env, "raced").await;
    assert_eq!(title, Some(format!("creator {}", winners[0])));
}

#[tokio::test]
async fn a_server_without_post_of_items_gets_a_put_with_if_none_match() {
    let env = start().await;
    env.emu.create_collection(COLLECTION);
    env.emu.faults().add("put_stac:405:next=1".parse().unwrap());
    let created = env
        .client
        .create_item(
            COLLECTION,
            "by-put",
            &item_body("put"),
            &IdempotencyKey::new(),
        )
        .await
        .unwrap();
    assert_eq!(created, ItemCreate::Created);
    assert_eq!(title_of(&env, "by-put").await.as_deref(), Some("put"));
}

#[tokio::test]
async fn a_create_in_a_missing_collection_names_the_request() {
    let env = start().await;
    let e = env
        .client
        .create_item(
            "ch.test.nowhere",
            "x",
            &item_body("x"),
            &IdempotencyKey::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status.map(|s| s.as_u16()), Some(404), "{e}");
    assert!(e.to_string().contains("ch.test.nowhere"), "{e}");
}

#[tokio::test]
async fn items_are_listed_across_pages_and_bounded() {
    let env = start().await;
    env.emu.create_collection(COLLECTION);
    for n in 0..230 {
        let created = env
            .client
            .create_item(
                COLLECTION,
                &format!("item-{n:03}"),
                &item_body("x"),
                &IdempotencyKey::new(),
            )
            .await
            .unwrap();
        assert_eq!(created, ItemCreate::Created);
    }
    let all = env.client.list_items(COLLECTION, 10_000).await.unwrap();
    let ids: Vec<&str> = all.iter().filter_map(|v| v["id"].as_str()).collect();
    let expected: Vec<String> = (0..230).map(|n| format!("item-{n:03}")).collect();
    assert_eq!(ids, expected);
    let some = env.client.list_items(COLLECTION, 120).await.unwrap();
    assert_eq!(some.len(), 120);
    assert_eq!(some[119]["id"], "item-119");
    assert!(
        env.client
            .list_items(COLLECTION, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn assets_are_listed_and_an_item_is_deleted_after_its_assets() {
    let env = start().await;
    let a = env.item_asset("a.zip");
    let b = env.item_asset("b.zip");
    let item = a.item.clone().unwrap();
    let listed = env.client.list_assets(&a.collection, &item).await.unwrap();
    let ids: Vec<&str> = listed.iter().filter_map(|v| v["id"].as_str()).collect();
    assert_eq!(ids, ["a.zip", "b.zip"]);

    let refused = env
        .client
        .delete_item(&a.collection, &item)
        .await
        .unwrap_err();
    assert_eq!(refused.status.map(|s| s.as_u16()), Some(400), "{refused}");

    env.client.delete_asset(&a).await.unwrap();
    env.client.delete_asset(&b).await.unwrap();
    assert!(env.client.get_asset(&a).await.unwrap().is_none());
    env.client.delete_item(&a.collection, &item).await.unwrap();
    assert!(
        env.client
            .get_item(&a.collection, &item)
            .await
            .unwrap()
            .is_none()
    );

    let gone = env
        .client
        .delete_asset(&AssetTarget::item_asset(&a.collection, &item, "a.zip"))
        .await
        .unwrap_err();
    assert_eq!(gone.status.map(|s| s.as_u16()), Some(404), "{gone}");
}
