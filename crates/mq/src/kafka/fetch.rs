//! The fetch task of one partition of a group: leases the partition, fetches its records into
//! the group's queue, renews the lease, and hands it over when the broker stops.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::RecordAndOffset;
use tokio::sync::watch;
use tokio::time::Instant;

use super::lease::Group;
use super::settle::dlq_headers;
use super::{Inner, client_error, with_timeout};
use crate::{Envelope, Lease, MqError, PartitionKey};

/// The wait after the first failed fetch of a run of failures; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between failed fetches.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why the task leaves what it is doing.
enum Halt {
    /// The broker stops: end the consumption and hand the lease over.
    Stopped,
    /// This instance does not hold the lease (any more), or could not start consuming under
    /// it: take it again.
    Unleased,
}

/// The broker's stop signal, as one task sees it.
struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// The output of `fut`, or [`Halt::Stopped`] once the broker stops first.
    async fn or_stop<F: Future>(&mut self, fut: F) -> Result<F::Output, Halt> {
        tokio::select! {
            biased;
            _ = self.0.wait_for(|s| *s) => Err(Halt::Stopped),
            out = fut => Ok(out),
        }
    }

    /// Sleeps for `duration`, or [`Halt::Stopped`] once the broker stops first.
    async fn sleep(&mut self, duration: Duration) -> Result<(), Halt> {
        self.or_stop(tokio::time::sleep(duration)).await
    }
}

/// One spell of consumption under a held lease, from taking the lease to losing it.
struct Tenure {
    /// The generation of the partition's consumption (see [`Group::start`]).
    generation: u64,
    /// When the lease was last taken or renewed.
    renewed: Instant,
    /// When to renew it next.
    renew_at: Instant,
    /// The wait after the next failed fetch.
    backoff: Duration,
}

/// The fetch task of one partition of a group. [`PartitionTask::run`] takes the partition's
/// lease (trying again every `lease_retry` while another instance holds it), then fetches into
/// the group's queue while the lease holds, renewing it on time; when the lease is lost it
/// starts over, and when the broker stops it drops what it buffered and releases the lease.
pub(super) struct PartitionTask {
    inner: Arc<Inner>,
    group: Arc<Group>,
    index: usize,
    key: PartitionKey,
    stop: StopSignal,
    /// This task held the lease at some point: release it when stopping.
    leased: bool,
}

impl PartitionTask {
    /// The task of partition `index` of `group`.
    pub(super) fn new(inner: Arc<Inner>, group: Arc<Group>, index: usize) -> Self {
        let stop = StopSignal(inner.stop.subscribe());
        let key = group.parts[index].key.clone();
        Self {
            inner,
            group,
            index,
            key,
            stop,
            leased: false,
        }
    }

    /// Consumes the partition until the broker stops.
    pub(super) async fn run(mut self) {
        let Ok(client) = self.connect().await else {
            return;
        };
        while let Halt::Unleased = self.consume(&client).await {}
        self.hand_over().await;
    }

    /// A fetch connection of this task's own, tried again every `lease_retry`.
    async fn connect(&mut self) -> Result<PartitionClient, Halt> {
        loop {
            match self
                .stop
                .or_stop(self.inner.fetch_client(&self.key))
                .await?
            {
                Ok(client) => return Ok(client),
                Err(e) => {
                    tracing::warn!(partition = ?self.key, error = %e, "kafka fetch connection failed");
                    self.stop.sleep(self.inner.settings.lease_retry).await?;
                }
            }
        }
    }

    /// Takes the lease and consumes under it, step by step, until the lease is lost or the
    /// broker stops.
    async fn consume(&mut self, client: &PartitionClient) -> Halt {
        let mut tenure = match self.take_lease(client).await {
            Ok(tenure) => tenure,
            Err(halt) => return halt,
        };
        loop {
            if let Err(halt) = self.step(client, &mut tenure).await {
                return halt;
            }
        }
    }

    /// Takes the lease and starts consuming at the committed offset, or the earliest one for a
    /// group that never committed. When the lease is held by another instance or a request
    /// fails, waits `lease_retry` and answers [`Halt::Unleased`].
    async fn take_lease(&mut self, client: &PartitionClient) -> Result<Tenure, Halt> {
        let settings = &self.inner.settings;
        let lease = self
            .inner
            .offsets
            .lease(&self.key, &self.inner.owner, settings.lease_ttl);
        let committed = match self.stop.or_stop(lease).await? {
            Ok(Lease::Resume(next_offset)) => Some(next_offset),
            Ok(Lease::Fresh) => None,
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(partition = ?self.key, error = %e, "taking the partition lease failed");
                }
                self.stop.sleep(settings.lease_retry).await?;
                return Err(Halt::Unleased);
            }
        };
        self.leased = true;
        let renewed = Instant::now();
        let start = match committed {
            Some(next_offset) => next_offset,
            None => {
                let earliest = self.inner.timed(client.get_offset(OffsetAt::Earliest));
                match self.stop.or_stop(earliest).await? {
                    Ok(offset) => offset,
                    Err(e) => {
                        tracing::warn!(partition = ?self.key, error = %e, "reading the earliest offset failed");
                        self.stop.sleep(settings.lease_retry).await?;
                        return Err(Halt::Unleased);
                    }
                }
            }
        };
        let generation = self.group.start(self.index, start);
        tracing::debug!(partition = ?self.key, start, "consuming partition");
        Ok(Tenure {
            generation,
            renewed,
            renew_at: renewed + self.inner.lease_renewal(),
            backoff: FIRST_BACKOFF,
        })
    }

    /// One step under the lease: renew it when due; then wait while the consumers have enough
    /// buffered, or fetch.
    async fn step(&mut self, client: &PartitionClient, tenure: &mut Tenure) -> Result<(), Halt> {
        if !self.group.is_current(self.index, tenure.generation) {
            // A commit found the lease taken.
            return Err(Halt::Unleased);
        }
        self.renew_if_due(tenure).await?;
        let (buffered, next_fetch) = {
            let st = self.group.parts[self.index].state.lock();
            (st.buffered, st.next_fetch)
        };
        if buffered >= self.inner.settings.max_buffered {
            self.wait_for_space(tenure).await
        } else {
            self.fetch(client, tenure, next_fetch).await
        }
    }

    /// Renews the lease when due. Ends the consumption when the lease went to another
    /// instance, or when renewing failed for as long as the lease lives.
    async fn renew_if_due(&mut self, tenure: &mut Tenure) -> Result<(), Halt> {
        if Instant::now() < tenure.renew_at {
            return Ok(());
        }
        let settings = &self.inner.settings;
        let lease = self
            .inner
            .offsets
            .lease(&self.key, &self.inner.owner, settings.lease_ttl);
        match self.stop.or_stop(lease).await? {
            Ok(Lease::HeldByAnother) => {
                tracing::warn!(partition = ?self.key, "partition lease lost: consumption stops");
                self.group.end(self.index, Some(tenure.generation));
                Err(Halt::Unleased)
            }
            Ok(Lease::Fresh | Lease::Resume(_)) => {
                tenure.renewed = Instant::now();
                tenure.renew_at = tenure.renewed + self.inner.lease_renewal();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(partition = ?self.key, error = %e, "renewing the partition lease failed");
                if tenure.renewed.elapsed() >= settings.lease_ttl {
                    self.group.end(self.index, Some(tenure.generation));
                    return Err(Halt::Unleased);
                }
                tenure.renew_at = Instant::now() + self.inner.lease_renewal() / 4;
                Ok(())
            }
        }
    }

    /// Backpressure: waits for the consumers to take records, or for the lease renewal.
    async fn wait_for_space(&mut self, tenure: &Tenure) -> Result<(), Halt> {
        let space = tokio::time::timeout_at(
            tenure.renew_at,
            self.group.parts[self.index].wake.notified(),
        );
        // Timing out is fine: the next step renews the lease.
        let _ = self.stop.or_stop(space).await?;
        Ok(())
    }

    /// Fetches the records from `next_fetch` on and queues them; after a failure, waits (the
    /// backoff doubles) before the next step.
    async fn fetch(
        &mut self,
        client: &PartitionClient,
        tenure: &mut Tenure,
        next_fetch: i64,
    ) -> Result<(), Halt> {
        let settings = &self.inner.settings;
        // Long polls stay short of the lease renewal; tansu answers a fetch waiting 0 ms
        // without the partition, so wait at least 1 ms.
        let wait = settings.fetch_max_wait.min(self.inner.lease_renewal() / 2);
        let max_wait = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
        // Bounded by the renewal interval too, not only the request timeout: a fetch stuck
        // on an unreachable broker must not outlive the lease while this task still
        // believes it holds the partition.
        let fetch_limit = settings
            .request_timeout
            .min(self.inner.lease_renewal().max(wait * 2));
        let fetch = async {
            with_timeout(
                fetch_limit,
                client.fetch_records(next_fetch, 1..settings.fetch_max_bytes.max(2), max_wait),
            )
            .await?
            .map_err(client_error)
        };
        let failure = match self.stop.or_stop(fetch).await? {
            Ok((records, _high_watermark)) => accept(
                &self.inner,
                &self.group,
                self.index,
                tenure.generation,
                next_fetch,
                records,
            )
            .await
            .err(),
            Err(MqError::Backend(e)) if is_offset_out_of_range(&*e) => {
                self.skip_to_earliest(client, tenure, next_fetch, MqError::Backend(e))
                    .await?
            }
            Err(e) => Some(e),
        };
        match failure {
            None => tenure.backoff = FIRST_BACKOFF,
            Some(e) => {
                tracing::warn!(partition = ?self.key, error = %e, "kafka fetch failed");
                self.stop
                    .sleep(tenure.backoff.min(self.inner.lease_renewal()))
                    .await?;
                tenure.backoff = (tenure.backoff * 2).min(MAX_BACKOFF);
            }
        }
        Ok(())
    }

    /// After an out-of-range fetch: retention removed records before anyone consumed them, so
    /// consumption goes on at the earliest offset. Answers the failure to report when the
    /// position is not below the earliest offset (`error`), or the earliest offset is unknown.
    async fn skip_to_earliest(
        &mut self,
        client: &PartitionClient,
        tenure: &Tenure,
        next_fetch: i64,
        error: MqError,
    ) -> Result<Option<MqError>, Halt> {
        let earliest = self.inner.timed(client.get_offset(OffsetAt::Earliest));
        match self.stop.or_stop(earliest).await? {
            Ok(earliest) if next_fetch < earliest => {
                tracing::warn!(partition = ?self.key, next_fetch, earliest, "offset out of range: skipping to the earliest");
                let mut st = self.group.parts[self.index].state.lock();
                if st.generation == tenure.generation && st.next_fetch < earliest {
                    st.next_fetch = earliest;
                    st.outstanding.retain(|o, _| *o >= earliest);
                }
                Ok(None)
            }
            // Beyond the end of the log (the topic was recreated?): keep failing loudly rather
            // than skip or repeat messages.
            Ok(_) => Ok(Some(error)),
            Err(e) => Ok(Some(e)),
        }
    }

    /// Stopped: drops what is buffered and hands the lease over.
    async fn hand_over(self) {
        self.group.end(self.index, None);
        if !self.leased {
            return;
        }
        let release = self.inner.offsets.release(&self.key, &self.inner.owner);
        match with_timeout(self.inner.settings.request_timeout, release).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(partition = ?self.key, error = %e, "releasing the lease failed");
            }
        }
    }
}

/// Whether a fetch failed because its offset is outside the partition's log.
fn is_offset_out_of_range(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(
        e.downcast_ref::<ClientError>(),
        Some(ClientError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        })
    )
}

/// Queues fetched records; records that are no envelope go to the dead-letter topic.
async fn accept(
    inner: &Inner,
    group: &Group,
    index: usize,
    generation: u64,
    from: i64,
    records: Vec<RecordAndOffset>,
) -> Result<(), MqError> {
    let mut next_fetch = from;
    let mut ready = Vec::with_capacity(records.len());
    for r in records {
        if r.offset < from {
            continue;
        }
        next_fetch = next_fetch.max(r.offset + 1);
        match r.record.value.as_deref().map(Envelope::from_json) {
            Some(Ok(envelope)) => ready.push((r.offset, envelope)),
            _ => {
                tracing::error!(partition = ?group.parts[index].key, offset = r.offset, "not an envelope: dead-lettered");
                let key = &group.parts[index].key;
                let mut record = r.record;
                record
                    .headers
                    .extend(dlq_headers(key, r.offset, 0, "undecodable"));
                let dlq = inner.dlq_name(group.topic);
                let partition = key.partition.min(inner.partition_count(&dlq) - 1);
                inner.produce(&dlq, partition, vec![record]).await?;
            }
        }
    }
    group.push_fetched(index, generation, ready, next_fetch);
    Ok(())
}
