//! The OpenAPI document of the kiosk's HTTP API, derived from the handlers' types and served at `GET /api/v1/openapi.json`.

use std::borrow::Cow;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::alerts;
use crate::api::{self, ErrorBody};
use crate::cards::{self, BindBody, RevokeBody};
use crate::console;
use crate::handheld::{self, PostBody};
use crate::rotation;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiosk",
        description = "The reception kiosk's HTTP API. Errors are `{\"error\":{\"code\",\"message\"}}`."
    ),
    paths(
        api::screen,
        api::healthz,
        api::events,
        api::visits,
        handheld::post_visit,
        rotation::get_rotation,
        rotation::check_in,
        rotation::check_out,
        rotation::free,
        rotation::reorder,
        alerts::consultant_events,
        alerts::list_alerts,
        alerts::ack,
        cards::unbound,
        cards::bind,
        cards::revoke,
        cards::changes,
        api::status,
        api::metrics_text,
        serve,
        console::console,
        console::screen_settings,
        console::stats,
        console::visits_csv,
        console::consultants,
        console::system
    ),
    components(schemas(ErrorBody, cards::NewCustomerBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The device token scheme of `POST /api/v1/visits`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A device token from `kiosk devices add NAME`"))
                    .build(),
            ),
        );
    }
}

/// The handheld's request body: [`PostBody`]'s fields in the two shapes `parse` takes,
/// a card or a customer id, never both. Closed objects rather than `required` tricks,
/// so a fuzzer can generate from either shape directly.
pub(crate) struct VisitPost;

impl PartialSchema for VisitPost {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(base)) = PostBody::schema() else {
            unreachable!("PostBody derives an object schema")
        };
        OneOfBuilder::new()
            .item(exclusive(
                &base,
                "card",
                "customer_id",
                "A card read by the handheld",
            ))
            .item(exclusive(
                &base,
                "customer_id",
                "card",
                "A customer chosen on the handheld",
            ))
            .into()
    }
}

/// One shape of a body that takes exactly one of two fields: `given` must be there (and
/// not null), `absent` may only be null, and no other field is allowed (deny_unknown_fields).
fn exclusive(
    base: &utoipa::openapi::schema::Object,
    given: &str,
    absent: &str,
    description: &str,
) -> Schema {
    let mut shape = base.clone();
    shape.description = Some(description.to_owned());
    // The given field loses an Option's null: `[T, null]`, or a `oneOf` of null and a reference.
    match shape.properties.get_mut(given) {
        Some(RefOr::T(Schema::Object(field))) => {
            if let SchemaType::Array(types) = &field.schema_type {
                let types: Vec<&Type> = types.iter().filter(|t| **t != Type::Null).collect();
                if let [single] = types.as_slice() {
                    field.schema_type = SchemaType::new((*single).clone());
                }
            }
        }
        Some(field @ RefOr::T(Schema::OneOf(_))) => {
            let RefOr::T(Schema::OneOf(one_of)) = &*field else {
                unreachable!("matched above")
            };
            let is_null = |item: &RefOr<Schema>| matches!(item, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::new(Type::Null));
            let rest: Vec<&RefOr<Schema>> = one_of.items.iter().filter(|i| !is_null(i)).collect();
            if let [single] = rest.as_slice() {
                *field = (*single).clone();
            }
        }
        _ => {}
    }
    shape.required.push(given.to_owned());
    shape.properties.insert(
        absent.to_owned(),
        ObjectBuilder::new().schema_type(Type::Null).into(),
    );
    shape.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    Schema::Object(shape)
}

impl ToSchema for VisitPost {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("VisitPost")
    }
}

/// The binding's request body: [`BindBody`]'s fields in the two shapes
/// `cards::parse_bind` takes, an existing customer or a new walk-in, never both.
pub(crate) struct CardBindPost;

/// The card token's pattern, written once on the handheld's body and given to every
/// body that carries a card, so a fuzzer makes tokens the kiosk can read.
fn with_card_pattern(mut body: utoipa::openapi::schema::Object) -> utoipa::openapi::schema::Object {
    let RefOr::T(Schema::Object(post)) = PostBody::schema() else {
        unreachable!("PostBody derives an object schema")
    };
    let pattern = match post.properties.get("card") {
        Some(RefOr::T(Schema::Object(card))) => card.pattern.clone(),
        _ => None,
    };
    if let Some(RefOr::T(Schema::Object(card))) = body.properties.get_mut("card") {
        card.pattern = pattern;
    }
    body
}

impl PartialSchema for CardBindPost {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(base)) = BindBody::schema() else {
            unreachable!("BindBody derives an object schema")
        };
        let base = with_card_pattern(base);
        OneOfBuilder::new()
            .item(exclusive(
                &base,
                "customer_id",
                "new_customer",
                "A card for a customer of the roster",
            ))
            .item(exclusive(
                &base,
                "new_customer",
                "customer_id",
                "A card for a walk-in registered now",
            ))
            .into()
    }
}

impl ToSchema for CardBindPost {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CardBindPost")
    }
}

/// The revocation's request body: [`RevokeBody`] with the card token's pattern.
pub(crate) struct CardRevokePost;

impl PartialSchema for CardRevokePost {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(base)) = RevokeBody::schema() else {
            unreachable!("RevokeBody derives an object schema")
        };
        let mut body = with_card_pattern(base);
        body.description = Some("A card to revoke, and why".to_owned());
        Schema::Object(body).into()
    }
}

impl ToSchema for CardRevokePost {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CardRevokePost")
    }
}

/// The document as served and as checked in at `kiosk/openapi.json`: pretty JSON.
pub fn document() -> &'static str {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        let mut text = ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the document: {e}\"}}"));
        text.push('\n');
        text
    });
    &DOC
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)))]
pub(crate) async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::Arc;

    use tokio::sync::broadcast;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::api::{ApiState, Board, KioskInfo, ROUTES};
    use crate::handheld::{RATE_BURST, RATE_PER_SECOND, RateLimiter};
    use crate::store::{Identity, ReadDb, Store, Writer};

    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    #[test]
    fn openapi_describes_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("JSON");
        let described: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| METHODS.contains(&k.as_str()))
                    .map(move |m| (path.clone(), m.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
            .collect();
        assert_eq!(described, routed, "api::ROUTES and the document disagree");
    }

    /// Schemas built by hand (the request bodies' one-of shapes) name their nested types
    /// by reference; each must be among the document's components.
    #[test]
    fn openapi_references_all_resolve() {
        fn refs(value: &serde_json::Value, found: &mut BTreeSet<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, v) in map {
                        match v {
                            serde_json::Value::String(r) if key == "$ref" => {
                                found.insert(r.clone());
                            }
                            _ => refs(v, found),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
                _ => {}
            }
        }
        let doc: serde_json::Value = serde_json::from_str(document()).expect("JSON");
        let mut found = BTreeSet::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty(), "the document has references");
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("an unexpected reference {r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} is not among the components; list it in `components(schemas(...))`"
            );
        }
    }

    #[test]
    fn openapi_snapshot_is_current() {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        if std::env::var_os("KIOSK_UPDATE_OPENAPI").is_some() {
            std::fs::write(&file, document()).expect("write kiosk/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            committed == document(),
            "kiosk/openapi.json is not the document the code describes; regenerate it with \
             `KIOSK_UPDATE_OPENAPI=1 cargo test -p kiosk --lib openapi`, review the diff and commit it"
        );
    }

    /// Every route of ROUTES answers on a real router through a real port: neither 404
    /// nor 405, so ROUTES (and with it the document) lists only routes that exist.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openapi_routes_all_exist_on_the_router() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz");
        let identity = Identity {
            kiosk_id: "k1".into(),
            office_id: "o1".into(),
            time_zone: tz.clone(),
        };
        let store = Store::open(dir.path(), identity).expect("store");
        let db = ReadDb::open(dir.path(), tz).expect("read db");
        let (writer, _thread) = Writer::spawn(store).expect("writer");
        kiosk_sync::telemetry::prometheus();
        let shutdown = CancellationToken::new();
        let state = ApiState {
            info: Arc::new(KioskInfo {
                kiosk_id: "k1".into(),
                office: "o1".into(),
                office_name: "Office".into(),
                time_zone: "Asia/Shanghai".into(),
                data_dir: dir.path().to_owned(),
                reader_patterns: Vec::new(),
                privacy_notice_version: "1".into(),
                screen: crate::console::ScreenSettings::defaults(),
            }),
            db,
            board: Board::default(),
            events: broadcast::channel(16).0,
            shutdown: shutdown.clone(),
            sync: None,
            writer,
            sync_wake: None,
            limiter: Arc::new(RateLimiter::new(RATE_PER_SECOND, RATE_BURST)),
            alerts: Default::default(),
            webhooks: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
        let client = kiosk_tests::http_client();
        for (path, method) in ROUTES {
            let url = format!("http://{addr}{path}");
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            // Headers are enough: the event stream never ends.
            let response = client
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = response.status().as_u16();
            assert!(
                status != 404 && status != 405,
                "{method} {path} answered {status}: ROUTES lists a route the router lacks"
            );
        }
        // And a route not listed is a 404, so the check above can fail.
        let missing = client
            .get(format!("http://{addr}/api/v1/nope"))
            .send()
            .await
            .expect("GET");
        assert_eq!(missing.status(), 404);
        drop(client);
        server.abort();
    }
}
