//! The seckill gRPC API (`seckill.v1.Seckill`, in `proto/seckill/v1/seckill.proto`): every
//! operation of the HTTP API over the same [`seckill_service::Service`], so the rules, the
//! limits and the answers are the same. Served with server reflection and the standard
//! `grpc.health.v1` service.
//!
//! Callers authenticate with `authorization: Bearer <token>` metadata, as over HTTP. Errors
//! are gRPC status codes (see the `.proto`); each carries the HTTP API's envelope code in the
//! `seckill-code` metadata entry and, as the JSON `{"code", "message"}`, in its details.
//!
//! # Example
//! ```
//! use seckill_service::{Components, Service, ServiceConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (service, pipeline) = Service::start(ServiceConfig::default(), Components::embedded()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // The shutdown future is already complete: serve stops at once.
//! seckill_grpc::serve(listener, service, async {}).await?;
//! pipeline.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::net::IpAddr;

use seckill_service::{
    Caller, ChallengeAnswer, DegradationMode, PurchaseInput, RateLimitChange, RateLimitView, Sale,
    Service, ServiceError,
};
use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

/// The generated messages, server and client of `seckill.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("seckill.v1");

    /// The encoded descriptor set of `seckill.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/seckill_descriptor.bin"));
}

use pb::seckill_server::{Seckill, SeckillServer};

/// The full name of the service, as reflection and health know it.
pub const SERVICE_NAME: &str = "seckill.v1.Seckill";

/// The gRPC front over a [`Service`].
#[derive(Clone)]
pub struct GrpcApi {
    service: Service,
}

impl GrpcApi {
    /// The front over `service`.
    pub fn new(service: Service) -> Self {
        Self { service }
    }

    /// As a tonic service, ready for a [`tonic::transport::Server`].
    pub fn into_server(self) -> SeckillServer<Self> {
        SeckillServer::new(self)
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let authorization = match request.metadata().get("authorization") {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                status(&ServiceError::invalid_field(
                    "authorization",
                    "must be visible ASCII",
                ))
            })?),
        };
        let peer: Option<IpAddr> = request.remote_addr().map(|a| a.ip());
        self.service
            .authenticate(authorization, peer)
            .map_err(|e| status(&e))
    }
}

/// The gRPC status of a service error: its code, the message, and the envelope code in the
/// `seckill-code` metadata and in the details.
pub fn status(e: &ServiceError) -> Status {
    let code = e.code();
    let grpc = match code / 100 {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => match code {
            40301..=40303 => Code::FailedPrecondition,
            _ => Code::PermissionDenied,
        },
        404 => Code::NotFound,
        409 => match code {
            40902 => Code::AlreadyExists,
            _ => Code::FailedPrecondition,
        },
        422 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    let message = e.to_string();
    let details = serde_json::json!({"code": code, "message": message}).to_string();
    let mut s = Status::with_details(grpc, message, details.into_bytes().into());
    s.metadata_mut()
        .insert("seckill-code", MetadataValue::from(code));
    if let Some(after) = e.retry_after() {
        s.metadata_mut().insert(
            "retry-after",
            MetadataValue::from(after.as_secs_f64().ceil() as u64),
        );
    }
    s
}

fn answer<T>(r: Result<T, ServiceError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(|e| status(&e))
}

fn order_view(o: seckill_orders::Order) -> pb::Order {
    pb::Order {
        order_id: o.order_id,
        product_id: o.product_id,
        user_id: o.user_id,
        quantity: o.quantity,
        price_cents: o.price_cents,
        status: o.status.as_str().to_owned(),
        sold_at_ms: o.sold_at_ms,
        created_at_ms: o.created_at_ms,
        expires_at_ms: o.expires_at_ms,
        updated_at_ms: o.updated_at_ms,
        epoch: o.epoch,
    }
}

fn rate_limit_view(v: RateLimitView) -> pb::RateLimit {
    pb::RateLimit {
        enable: v.enable,
        algorithm: v.algorithm.map(str::to_owned),
        requests_per_second: v.requests_per_second,
        burst_size: v.burst_size,
    }
}

fn mode_name(m: DegradationMode) -> &'static str {
    match m {
        DegradationMode::On => "on",
        DegradationMode::Off => "off",
        DegradationMode::Auto => "auto",
    }
}

impl GrpcApi {
    /// The caller and their validated purchase; an invalid one is counted as such.
    fn purchase_of(
        &self,
        request: &Request<pb::PurchaseRequest>,
    ) -> Result<(Caller, seckill_service::Purchase), Status> {
        let caller = self.caller(request)?;
        let purchase = self
            .service
            .purchase_request(&caller, Self::purchase_input(request))
            .map_err(|e| {
                self.service.record_invalid();
                status(&e)
            })?;
        Ok((caller, purchase))
    }

    fn purchase_input(request: &Request<pb::PurchaseRequest>) -> PurchaseInput {
        let r = request.get_ref();
        let key = r.idempotency_key.clone().or_else(|| {
            request
                .metadata()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        PurchaseInput {
            product_id: r.product_id,
            user_id: r.user_id,
            quantity: (r.quantity != 0).then_some(u64::from(r.quantity)),
            idempotency_key: key,
            purchase_token: r.purchase_token.clone(),
        }
    }
}

#[tonic::async_trait]
impl Seckill for GrpcApi {
    async fn purchase(
        &self,
        request: Request<pb::PurchaseRequest>,
    ) -> Result<Response<pb::Sale>, Status> {
        let started = std::time::Instant::now();
        let s = &self.service;
        let result = async {
            let (caller, purchase) = self.purchase_of(&request)?;
            let outcome = s
                .purchase(&purchase, &caller)
                .await
                .map_err(|e| status(&e))?;
            match Sale::from_outcome(&purchase.request, &outcome) {
                Some(sale) => Ok(Response::new(pb::Sale {
                    order_id: sale.order_id,
                    product_id: sale.product_id,
                    user_id: sale.user_id,
                    quantity: sale.quantity,
                    remaining_stock: sale.remaining_stock,
                })),
                None => Err(status(
                    &ServiceError::from_outcome(&outcome).unwrap_or(ServiceError::Internal),
                )),
            }
        }
        .await;
        s.record_purchase_latency(started.elapsed());
        result
    }

    async fn purchase_async(
        &self,
        request: Request<pb::PurchaseRequest>,
    ) -> Result<Response<pb::Accepted>, Status> {
        let (caller, purchase) = self.purchase_of(&request)?;
        match self
            .service
            .purchase_async(&purchase, &caller)
            .await
            .map_err(|e| status(&e))?
        {
            seckill_service::Accepted::Confirmed(id) => Ok(Response::new(pb::Accepted {
                request_id: id,
                status: "pending".into(),
            })),
            // It may still run: never "failed"; the id to poll is in the metadata.
            seckill_service::Accepted::Unconfirmed(id) => {
                let mut st = status(&ServiceError::Busy {
                    reason: seckill_service::BusyReason::OutcomeUnknown,
                    message: seckill_service::Accepted::UNCONFIRMED.into(),
                    retry_after: None,
                });
                if let Ok(v) = id.parse() {
                    st.metadata_mut().insert("request-id", v);
                }
                Err(st)
            }
        }
    }

    async fn get_result(
        &self,
        request: Request<pb::ResultRequest>,
    ) -> Result<Response<pb::AsyncResult>, Status> {
        let caller = self.caller(&request)?;
        let id = &request.get_ref().request_id;
        let st = self
            .service
            .result(&caller, id)
            .await
            .map_err(|e| status(&e))?;
        let mut out = pb::AsyncResult {
            request_id: id.clone(),
            ..Default::default()
        };
        match st {
            seckill_service::AsyncStatus::Pending => out.status = "pending".into(),
            seckill_service::AsyncStatus::Success {
                order_id,
                remaining_stock,
            } => {
                out.status = "success".into();
                out.order_id = Some(order_id);
                out.remaining_stock = Some(remaining_stock);
            }
            seckill_service::AsyncStatus::Failed { code, reason } => {
                out.status = "failed".into();
                out.code = Some(code);
                out.reason = Some(reason);
            }
        }
        Ok(Response::new(out))
    }

    async fn get_challenge(
        &self,
        request: Request<pb::ChallengeRequest>,
    ) -> Result<Response<pb::Challenge>, Status> {
        let caller = self.caller(&request)?;
        let r = request.get_ref();
        let issued = self
            .service
            .challenge(&caller, r.product_id, r.user_id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(match issued {
            None => pb::Challenge::default(),
            Some(c) => pb::Challenge {
                required: true,
                challenge: c.challenge,
                difficulty: u32::from(c.difficulty),
                expires_at_ms: c.expires_at_ms,
            },
        }))
    }

    async fn get_purchase_token(
        &self,
        request: Request<pb::PurchaseTokenRequest>,
    ) -> Result<Response<pb::PurchaseToken>, Status> {
        let caller = self.caller(&request)?;
        let r = request.get_ref();
        let answer = match (&r.challenge, &r.solution) {
            (Some(challenge), Some(solution)) => Some(ChallengeAnswer {
                challenge,
                solution,
            }),
            _ => None,
        };
        let issued = self
            .service
            .purchase_token(&caller, r.product_id, r.user_id, answer)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(match issued {
            None => pb::PurchaseToken::default(),
            Some(t) => pb::PurchaseToken {
                required: true,
                token: t.token,
                expires_at_ms: t.expires_at_ms,
            },
        }))
    }

    async fn prewarm(
        &self,
        request: Request<pb::PrewarmRequest>,
    ) -> Result<Response<pb::Prewarmed>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let input = seckill_service::ActivityInput {
            product_id: r.product_id,
            product_name: r.product_name,
            price: r.price,
            stock: r.stock,
            start_time: r.start_time,
            end_time: r.end_time,
            status: r.status,
            per_user_limit: r.per_user_limit,
            force: r.force,
        };
        answer(
            self.service
                .prewarm(&caller, input)
                .await
                .map(|p| pb::Prewarmed {
                    product_id: p.product_id,
                    epoch: p.epoch,
                    result: p.result.to_owned(),
                    stock: p.stock,
                    restored_orders: p.restored_orders,
                    remaining_stock: p.remaining_stock,
                }),
        )
    }

    async fn get_stats(
        &self,
        request: Request<pb::ProductRequest>,
    ) -> Result<Response<pb::ProductStats>, Status> {
        let id = request.get_ref().product_id;
        answer(
            self.service
                .product_stats(id)
                .await
                .map(|p| pb::ProductStats {
                    product_id: p.product_id,
                    product_name: p.product_name,
                    status: p.status.to_owned(),
                    price: p.price,
                    start_time: p.start_time,
                    end_time: p.end_time,
                    per_user_limit: p.per_user_limit,
                    epoch: p.epoch,
                    initial_stock: p.initial_stock,
                    remaining_stock: p.remaining_stock,
                    sold: p.sold,
                    buyers: p.buyers,
                    cancelled: p.cancelled,
                    orders_created: p.orders_created,
                    outbox_pending: p.outbox_pending,
                    in_transit: p.in_transit,
                }),
        )
    }

    async fn get_purchased(
        &self,
        request: Request<pb::PurchasedRequest>,
    ) -> Result<Response<pb::Purchased>, Status> {
        let caller = self.caller(&request)?;
        let r = request.get_ref();
        answer(
            self.service
                .purchased(&caller, r.product_id, r.user_id)
                .await
                .map(|p| pb::Purchased {
                    product_id: p.product_id,
                    user_id: p.user_id,
                    purchased: p.purchased,
                    order_id: p.order_id,
                }),
        )
    }

    async fn get_order(
        &self,
        request: Request<pb::OrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = self.caller(&request)?;
        let id = &request.get_ref().order_id;
        answer(self.service.order(&caller, id).await.map(order_view))
    }

    async fn pay_order(
        &self,
        request: Request<pb::OrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = self.caller(&request)?;
        let id = &request.get_ref().order_id;
        answer(self.service.pay(&caller, id).await.map(order_view))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::OrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = self.caller(&request)?;
        let id = &request.get_ref().order_id;
        answer(self.service.cancel(&caller, id).await.map(order_view))
    }

    async fn get_system_stats(
        &self,
        request: Request<pb::SystemStatsRequest>,
    ) -> Result<Response<pb::SystemStats>, Status> {
        let caller = self.caller(&request)?;
        answer(self.service.system_stats(&caller).await.map(|s| {
            pb::SystemStats {
                uptime_seconds: s.uptime_seconds,
                requests: s
                    .requests
                    .into_iter()
                    .map(|r| pb::OutcomeCount {
                        outcome: r.outcome.to_owned(),
                        count: r.count,
                    })
                    .collect(),
                in_flight: s.in_flight as u64,
                queue_waiting: s.queue_waiting as u64,
                max_concurrent_requests: s.max_concurrent_requests as u64,
                queue_size: s.queue_size as u64,
                load: s.load,
                degraded: s.degraded,
                degradation_mode: mode_name(s.degradation_mode).to_owned(),
                circuit_breaker: s.circuit_breaker.to_owned(),
                outbox_pending: s.outbox_pending,
                orders_queued: s.orders_queued,
                async_queued: s.async_queued,
                async_pending: s.async_pending.map(|n| n as u64),
            }
        }))
    }

    async fn set_degradation(
        &self,
        request: Request<pb::DegradationRequest>,
    ) -> Result<Response<pb::Degradation>, Status> {
        let caller = self.caller(&request)?;
        answer(
            DegradationMode::parse(&request.get_ref().mode)
                .and_then(|mode| self.service.set_degradation(&caller, mode))
                .map(|(mode, degraded)| pb::Degradation {
                    mode: mode_name(mode).to_owned(),
                    degraded,
                }),
        )
    }

    async fn get_rate_limit(
        &self,
        request: Request<pb::RateLimitRequest>,
    ) -> Result<Response<pb::RateLimit>, Status> {
        let caller = self.caller(&request)?;
        answer(self.service.rate_limit(&caller).map(rate_limit_view))
    }

    async fn set_rate_limit(
        &self,
        request: Request<pb::RateLimitChange>,
    ) -> Result<Response<pb::RateLimit>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        answer(
            self.service
                .set_rate_limit(
                    &caller,
                    RateLimitChange {
                        enable: r.enable,
                        requests_per_second: r.requests_per_second,
                        burst_size: r.burst_size,
                        algorithm: r.algorithm,
                    },
                )
                .map(rate_limit_view),
        )
    }
}

/// Runs each call inside a `grpc` span carrying its request id (the caller's `x-request-id`
/// metadata when usable, else a fresh one) and answers with the id in the same metadata key.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithRequestId(inner)
    }
}

/// The service [`RequestIdLayer`] wraps.
#[derive(Clone, Debug)]
pub struct WithRequestId<S>(S);

impl<S, B, R> tower_service::Service<http::Request<B>> for WithRequestId<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<http::Response<R>, S::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        use seckill_service::request_id;
        use tracing::Instrument;
        let id = request_id::of(
            req.headers()
                .get(request_id::HEADER)
                .and_then(|v| v.to_str().ok()),
        );
        let span = tracing::info_span!("grpc", request_id = %id, method = %req.uri().path());
        let call = {
            let _entered = span.enter();
            self.0.call(req)
        };
        Box::pin(
            async move {
                let mut response = call.await?;
                if let Ok(v) = http::HeaderValue::from_str(&id) {
                    response.headers_mut().insert(request_id::HEADER, v);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Serves the gRPC API of `service` on `listener`, with server reflection and the
/// `grpc.health.v1` service (SERVING for `seckill.v1.Seckill` and the server as a whole),
/// until `shutdown` completes.
///
/// # Errors
/// The transport failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<SeckillServer<GrpcApi>>().await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptor sets are well formed");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the descriptor sets are well formed");
    tonic::transport::Server::builder()
        .layer(RequestIdLayer)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(GrpcApi::new(service).into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
