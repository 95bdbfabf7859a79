//! Qdrant with Cohere embeddings: only new or changed chunks are embedded (in batches Cohere
//! accepts) and upserted; 429 and 5xx are retried with backoff, honouring `Retry-After`.
//!
//! Each point holds the dense embedding and a sparse keyword vector (rag-core's `keywords`,
//! which the query side shares) for hybrid retrieval. A collection created before hybrid
//! retrieval (one unnamed vector) keeps working dense-only; deleting it and ingesting again
//! upgrades it.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, Result};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use rag_core::config::Settings;
use rag_core::docs::Chunk;
use rag_core::keywords;
use rag_core::upstream::cohere::{Cohere, InputType, EMBED_BATCH_SIZE};
use rag_core::upstream::qdrant::{
    CollectionShape, Layout, NewPoint, PointId, Qdrant, INDEXED_FIELDS,
};
use rag_core::upstream::{Service, UpstreamError};

use super::{plan, progress_bar, Applied, Options};
use crate::outbound_http::OutboundClient;

/// Points per scroll page and per delete call.
const PAGE_SIZE: usize = 256;

struct Upstreams<'a> {
    client: OutboundClient,
    options: &'a Options,
    cohere: Cohere,
    qdrant: Qdrant,
}

impl Upstreams<'_> {
    async fn send_once(
        &self,
        service: Service,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, UpstreamError> {
        let timeout = self.options.call_timeout;
        let (parts, body) = request.into_parts();
        let body = Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync();
        let response = self
            .client
            .send(Request::from_parts(parts, body), timeout)
            .await
            .map_err(|error| transport_error(service, &error))?;
        let (parts, body) = response.into_parts();
        let collected = tokio::time::timeout(timeout, body.collect())
            .await
            .map_err(|_| UpstreamError::timeout(service))?
            .map_err(|error| transport_error(service, &error))?;
        Ok(Response::from_parts(parts, collected.to_bytes().to_vec()))
    }

    /// Sends `build()` until `parse` accepts the answer, retrying what may succeed later.
    async fn call<T>(
        &self,
        service: Service,
        build: impl Fn() -> Request<Vec<u8>>,
        parse: impl Fn(&Response<Vec<u8>>) -> Result<T, UpstreamError>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.send_once(service, build()).await {
                Ok(response) => match parse(&response) {
                    Ok(value) => return Ok(value),
                    Err(error) => error,
                },
                Err(error) => error,
            };
            let delay = if error.is_retryable() {
                self.options.retry.next_delay(
                    attempt,
                    error.retry_after,
                    started.elapsed(),
                    random(),
                )
            } else {
                None
            };
            match delay {
                Some(delay) => {
                    tracing::debug!("{error}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(anyhow!("{error} (after {attempt} attempt(s))")),
            }
        }
    }

    /// Content hashes and point ids, keyed by the id in lower case.
    async fn stored(&self) -> Result<(HashMap<String, String>, HashMap<String, PointId>)> {
        let mut stored = HashMap::new();
        let mut ids = HashMap::new();
        let mut offset: Option<PointId> = None;
        loop {
            let page = self
                .call(
                    Service::Qdrant,
                    || {
                        self.qdrant
                            .scroll_request(PAGE_SIZE as u32, offset.as_ref())
                    },
                    Qdrant::parse_scroll_response,
                )
                .await?;
            for point in page.points {
                let key = point.id.to_string().to_ascii_lowercase();
                stored.insert(key.clone(), point.hash);
                ids.insert(key, point.id);
            }
            match page.next_offset {
                Some(next) => offset = Some(next),
                None => return Ok((stored, ids)),
            }
        }
    }

    async fn create_collection(&self, vector_size: usize) -> Result<()> {
        self.call(
            Service::Qdrant,
            || self.qdrant.create_collection_request(vector_size),
            Qdrant::check_ok,
        )
        .await?;
        for field in INDEXED_FIELDS {
            self.call(
                Service::Qdrant,
                || self.qdrant.create_index_request(field),
                Qdrant::check_ok,
            )
            .await?;
        }
        tracing::info!(
            "created Qdrant collection {} ({vector_size}-dimension cosine vector and an IDF-weighted keyword vector)",
            self.qdrant.collection
        );
        Ok(())
    }

    async fn shape(&self) -> Result<CollectionShape> {
        let shape = self
            .call(
                Service::Qdrant,
                || self.qdrant.collection_info_request(),
                Qdrant::parse_shape,
            )
            .await?;
        if shape.layout == Layout::DenseOnly {
            tracing::warn!(
                "Qdrant collection {} has one unnamed vector (created by an earlier version): keyword vectors are not stored and retrieval stays dense-only; delete the collection and ingest again for hybrid retrieval",
                self.qdrant.collection
            );
        }
        Ok(shape)
    }

    /// Embeds one short text to learn the model's vector size and refuses a collection made
    /// for another, before any chunk is embedded: Qdrant would reject every upsert.
    async fn check_vector_size(&self, shape: CollectionShape) -> Result<()> {
        let probe = ["vector size check"];
        let embedded = self
            .call(
                Service::Cohere,
                || self.cohere.embed_request(&probe, InputType::SearchDocument),
                |response| Cohere::parse_embed_response(response, probe.len()),
            )
            .await?;
        let model_size = embedded.first().map_or(0, Vec::len);
        if model_size == shape.vector_size {
            return Ok(());
        }
        Err(anyhow!(
            "Qdrant collection {collection:?} holds {held}-dimension vectors but the embedding model {model:?} makes {model_size}-dimension ones; nothing was embedded or written. Either delete the collection (curl -X DELETE \"$QDRANT_URL/collections/{collection}\" -H \"api-key: $QDRANT_API_KEY\") or set QDRANT_COLLECTION to a new name, then run `host ingest` again",
            collection = self.qdrant.collection,
            held = shape.vector_size,
            model = self.cohere.embed_model,
        ))
    }
}

fn transport_error(service: Service, error: &wasmtime_wasi_http::Error) -> UpstreamError {
    use wasmtime_wasi_http::Error as E;
    match error {
        E::ConnectionTimeout | E::ConnectionReadTimeout | E::HttpResponseTimeout => {
            UpstreamError::timeout(service)
        }
        other => UpstreamError::connect(service, format!("{other:?}")),
    }
}

/// Jitter for the backoff; no cryptographic quality needed.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// What the model embeds for a chunk: the page title and heading give the text its context.
fn embedding_text(chunk: &Chunk) -> String {
    if chunk.heading.is_empty() {
        format!("{}\n\n{}", chunk.title, chunk.text)
    } else {
        format!("{} — {}\n\n{}", chunk.title, chunk.heading, chunk.text)
    }
}

pub(super) async fn sync(
    options: &Options,
    settings: &Settings,
    chunks: &[Chunk],
) -> Result<Applied> {
    let missing: Vec<&str> = [
        ("COHERE_API_KEY", settings.cohere_api_key.is_none()),
        ("QDRANT_URL", settings.qdrant_url.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, unset)| unset.then_some(name))
    .collect();
    let (Some(cohere), Some(qdrant)) = (
        Cohere::from_settings(settings),
        Qdrant::from_settings(settings),
    ) else {
        return Err(anyhow!(
            "the Qdrant target needs {} to be set",
            missing.join(" and ")
        ));
    };
    let upstreams = Upstreams {
        client: OutboundClient::new(options.connect_timeout, options.call_timeout)?,
        options,
        cohere,
        qdrant,
    };

    let exists = upstreams
        .call(
            Service::Qdrant,
            || upstreams.qdrant.exists_request(),
            Qdrant::parse_exists_response,
        )
        .await?;
    let (stored, point_ids) = if exists {
        upstreams.stored().await?
    } else {
        Default::default()
    };
    let shape = if exists {
        Some(upstreams.shape().await?)
    } else {
        None
    };
    let layout = shape.map_or(Layout::Hybrid, |shape| shape.layout);
    let plan = plan(chunks, &stored);
    let stale = if options.prune {
        0
    } else {
        plan.vanished.len()
    };
    if options.dry_run {
        return Ok(Applied {
            embedded: plan.write.len(),
            written: plan.write.len(),
            unchanged: plan.unchanged,
            deleted: if options.prune {
                plan.vanished.len()
            } else {
                0
            },
            stale,
        });
    }

    if let (Some(shape), false) = (shape, plan.write.is_empty()) {
        upstreams.check_vector_size(shape).await?;
    }
    let bar = progress_bar(options.show_progress, plan.write.len(), "embedding");
    let mut collection_ready = exists;
    let mut embedded = 0;
    for batch in plan.write.chunks(EMBED_BATCH_SIZE) {
        let texts: Vec<String> = batch.iter().map(|chunk| embedding_text(chunk)).collect();
        let vectors = upstreams
            .call(
                Service::Cohere,
                || {
                    upstreams
                        .cohere
                        .embed_request(&texts, InputType::SearchDocument)
                },
                |response| Cohere::parse_embed_response(response, texts.len()),
            )
            .await?;
        embedded += batch.len();
        if !collection_ready {
            let size = vectors.first().map_or(0, Vec::len);
            upstreams.create_collection(size).await?;
            collection_ready = true;
        }
        let points: Vec<NewPoint> = batch
            .iter()
            .zip(vectors)
            .map(|(chunk, vector)| NewPoint {
                id: chunk.id.clone(),
                vector,
                sparse: keywords::sparse_vector(&embedding_text(chunk)),
                passage: chunk.to_passage(),
                hash: chunk.hash.clone(),
            })
            .collect();
        upstreams
            .call(
                Service::Qdrant,
                || upstreams.qdrant.upsert_request(&points, layout),
                Qdrant::check_ok,
            )
            .await?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();

    let mut deleted = 0;
    if options.prune && exists {
        for ids in plan.vanished.chunks(PAGE_SIZE) {
            let ids: Vec<PointId> = ids
                .iter()
                .filter_map(|key| point_ids.get(key).cloned())
                .collect();
            upstreams
                .call(
                    Service::Qdrant,
                    || upstreams.qdrant.delete_points_request(&ids),
                    Qdrant::check_ok,
                )
                .await?;
            deleted += ids.len();
        }
    }
    Ok(Applied {
        embedded,
        written: embedded,
        unchanged: plan.unchanged,
        deleted,
        stale,
    })
}
