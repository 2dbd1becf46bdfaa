//! Task events to containerd's `containerd.services.events.ttrpc.v1.Events/Forward` at
//! `TTRPC_ADDRESS`.
//!
//! One task on the shim's event loop drains a bounded FIFO queue, so events leave in the
//! order the service produced them (TaskCreate → TaskStart → TaskExit → TaskDelete). A
//! failed forward is retried with backoff on a fresh connection, then logged and dropped:
//! a publishing failure never fails a task operation. A full queue drops the event with
//! an error log rather than blocking the caller. Before the daemon exits it lets the
//! queue drain ([`Publisher::drained`]).
//!
//! Without containerd (the `peapod` CLI's embedded mode) events can instead be appended to
//! an event log, `$PEAPOD_EVENT_LOG`: the same [`Envelope`]s, in the format of
//! [`proto::eventlog`], written synchronously in publishing order; `peapod describe`
//! shows them as the pod's events.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::EventsClient;
use containerd_shim_protos::ttrpc::{self, context};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{channel, Receiver, Sender};
use tokio::sync::Notify;

/// Events queued at most; beyond that new events are dropped (and logged).
pub const QUEUE_LEN: usize = 1024;
/// Forward attempts per event.
pub const ATTEMPTS: u32 = 5;

/// A message's type URL as containerd's typeurl registers protobuf types: its full
/// protobuf name (`containerd.events.TaskExit`). A constant, not
/// `MessageFull::descriptor().full_name()`: the first `descriptor()` call builds
/// rust-protobuf's reflection tables for the message's whole `.proto` file and keeps them
/// for the process's life, 350 KiB of heap per shim for the events' file and 185 KiB
/// more for the cgroup metrics' (measured with `mallinfo2`, issue 17), all for one
/// string. The unit tests check each constant against the descriptor.
pub trait TypeUrl: Message {
    /// The message's full protobuf name.
    const TYPE_URL: &'static str;
}

/// A task event with its containerd topic.
pub trait Event: TypeUrl {
    /// e.g. `/tasks/exit`.
    const TOPIC: &'static str;
}

macro_rules! topics {
    ($($t:ident => $topic:expr),* $(,)?) => {
        $(
            impl TypeUrl for $t {
                const TYPE_URL: &'static str = concat!("containerd.events.", stringify!($t));
            }
            impl Event for $t {
                const TOPIC: &'static str = $topic;
            }
        )*
    };
}

topics! {
    TaskCreate => "/tasks/create",
    TaskStart => "/tasks/start",
    TaskDelete => "/tasks/delete",
    TaskExit => "/tasks/exit",
    TaskOOM => "/tasks/oom",
    TaskExecAdded => "/tasks/exec-added",
    TaskExecStarted => "/tasks/exec-started",
    TaskPaused => "/tasks/paused",
    TaskResumed => "/tasks/resumed",
}

/// The current time as a protobuf timestamp.
pub fn now() -> Timestamp {
    to_timestamp(SystemTime::now())
}

/// `t` as a protobuf timestamp (seconds and nanoseconds since the epoch).
pub fn to_timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

pub use proto::eventlog::EVENT_LOG_ENV;

/// Where events go.
#[derive(Clone)]
pub struct Publisher {
    namespace: String,
    sink: Sink,
}

#[derive(Clone)]
enum Sink {
    /// Nobody listens: events are only logged.
    None,
    /// containerd, through the forwarding task.
    Containerd(Sender<Envelope>, Arc<Queued>),
    /// An append-only event log.
    File(Arc<Mutex<File>>),
}

impl Publisher {
    /// Publishes to containerd's ttrpc socket `ttrpc_address` (a path or `unix://` URL),
    /// from a task on the current tokio runtime (the shim's event loop).
    ///
    /// Panics outside a tokio runtime.
    pub fn new(ttrpc_address: &str, namespace: &str) -> Self {
        let (tx, rx) = channel(QUEUE_LEN);
        let address = if ttrpc_address.starts_with("unix://") {
            ttrpc_address.to_string()
        } else {
            format!("unix://{ttrpc_address}")
        };
        let queued = Arc::new(Queued::default());
        tokio::spawn(forward_loop(address, rx, queued.clone()));
        Self {
            namespace: namespace.to_string(),
            sink: Sink::Containerd(tx, queued),
        }
    }

    /// Resolves once every event queued for containerd so far has been forwarded or
    /// dropped, or after `timeout`; at once for a publisher without containerd.
    pub async fn drained(&self, timeout: Duration) {
        let Sink::Containerd(_, queued) = &self.sink else {
            return;
        };
        let all_out = crate::wake::when(&queued.changed, || {
            (queued.count.load(Ordering::SeqCst) == 0).then_some(())
        });
        if tokio::time::timeout(timeout, all_out).await.is_err() {
            tracing::warn!(
                events = queued.count.load(Ordering::SeqCst),
                "exiting with events not yet forwarded to containerd"
            );
        }
    }

    /// Appends events to the log at `path` (created if missing): for a shim started
    /// without containerd but with [`EVENT_LOG_ENV`] set, as the CLI's embedded mode does.
    pub fn to_file(path: &Path, namespace: &str) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            namespace: namespace.to_string(),
            sink: Sink::File(Arc::new(Mutex::new(file))),
        })
    }

    /// A publisher that only logs events (at debug level): for a shim started without
    /// `TTRPC_ADDRESS`, as the `peapod` CLI's embedded mode does.
    pub fn disabled(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            sink: Sink::None,
        }
    }

    /// Appends a record of peapod's own to the event log (`topic`, an `Any` of
    /// `type_url` holding `value`), such as a probe's result; never sent to containerd, and
    /// dropped (logged at debug level) by a publisher without an event log.
    pub fn record_local(&self, topic: &str, type_url: &str, value: Vec<u8>) {
        let Sink::File(file) = &self.sink else {
            tracing::debug!(topic, "record (no event log)");
            return;
        };
        let envelope = Envelope {
            timestamp: MessageField::some(now()),
            namespace: self.namespace.clone(),
            topic: topic.to_string(),
            event: MessageField::some(Any {
                type_url: type_url.to_string(),
                value,
                ..Default::default()
            }),
            ..Default::default()
        };
        let written = proto::eventlog::encode(&envelope)
            .map_err(io::Error::other)
            .and_then(|bytes| file.lock().expect("event log lock").write_all(&bytes));
        if let Err(e) = written {
            tracing::warn!(topic, error = %e, "cannot write the event log");
        }
    }

    /// Queues `event` for containerd.
    pub fn publish<E: Event>(&self, event: E) {
        let any = match pack(&event) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(topic = E::TOPIC, error = %e, "cannot encode event");
                return;
            }
        };
        let envelope = Envelope {
            timestamp: MessageField::some(now()),
            namespace: self.namespace.clone(),
            topic: E::TOPIC.to_string(),
            event: MessageField::some(any),
            ..Default::default()
        };
        let (tx, queued) = match &self.sink {
            Sink::Containerd(tx, queued) => (tx, queued),
            Sink::None => {
                tracing::debug!(topic = E::TOPIC, "event (no listener)");
                return;
            }
            Sink::File(file) => {
                // One write per envelope on an O_APPEND file: records never interleave.
                let written = proto::eventlog::encode(&envelope)
                    .map_err(io::Error::other)
                    .and_then(|bytes| file.lock().expect("event log lock").write_all(&bytes));
                if let Err(e) = written {
                    tracing::error!(topic = E::TOPIC, error = %e, "cannot append to the event log");
                }
                return;
            }
        };
        queued.count.fetch_add(1, Ordering::SeqCst);
        let refused = match tx.try_send(envelope) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "event queue full: event dropped",
            Err(TrySendError::Closed(_)) => "event publisher stopped: event dropped",
        };
        tracing::error!(topic = E::TOPIC, "{refused}");
        queued.done();
    }
}

/// Events in the queue or being forwarded, and a wake-up each time one is out.
#[derive(Default)]
struct Queued {
    count: AtomicUsize,
    changed: Notify,
}

impl Queued {
    fn done(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// Packs a message as containerd's typeurl does for protobuf types: the type URL is the
/// message's full name (`containerd.events.TaskExit`, [`TypeUrl`]).
pub fn pack<M: TypeUrl>(m: &M) -> Result<Any, containerd_shim_protos::protobuf::Error> {
    Ok(Any {
        type_url: M::TYPE_URL.to_string(),
        value: m.write_to_bytes()?,
        ..Default::default()
    })
}

async fn forward_loop(address: String, mut rx: Receiver<Envelope>, queued: Arc<Queued>) {
    let mut client: Option<EventsClient> = None;
    while let Some(envelope) = rx.recv().await {
        forward(&address, &mut client, envelope).await;
        queued.done();
    }
}

/// Forwards one event, connecting (again) as needed: [`ATTEMPTS`] tries with backoff
/// from 20 ms, then the event is logged and dropped.
async fn forward(address: &str, client: &mut Option<EventsClient>, envelope: Envelope) {
    let req = ForwardRequest {
        envelope: MessageField::some(envelope),
        ..Default::default()
    };
    let topic = req.envelope.topic.clone();
    let mut delay = Duration::from_millis(20);
    for attempt in 1..=ATTEMPTS {
        let c = match client.take() {
            Some(c) => c,
            None => match ttrpc::r#async::Client::connect(address).await {
                Ok(c) => EventsClient::new(c),
                Err(e) => {
                    tracing::warn!(%topic, attempt, error = %e, "connect to containerd events");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    continue;
                }
            },
        };
        match c.forward(context::with_timeout(5_000_000_000), &req).await {
            Ok(_) => {
                *client = Some(c);
                return;
            }
            Err(e) if attempt == ATTEMPTS => {
                tracing::error!(%topic, error = %e, "event dropped after {ATTEMPTS} attempts");
            }
            Err(e) => {
                tracing::warn!(%topic, attempt, error = %e, "forward event");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::MessageFull;

    fn type_url_is_the_full_name<M: TypeUrl + MessageFull>() {
        assert_eq!(M::TYPE_URL, M::descriptor().full_name());
    }

    #[test]
    fn type_urls_are_the_messages_full_names() {
        type_url_is_the_full_name::<TaskCreate>();
        type_url_is_the_full_name::<TaskStart>();
        type_url_is_the_full_name::<TaskDelete>();
        type_url_is_the_full_name::<TaskExit>();
        type_url_is_the_full_name::<TaskOOM>();
        type_url_is_the_full_name::<TaskExecAdded>();
        type_url_is_the_full_name::<TaskExecStarted>();
        type_url_is_the_full_name::<TaskPaused>();
        type_url_is_the_full_name::<TaskResumed>();
        type_url_is_the_full_name::<containerd_shim_protos::cgroups::metrics::Metrics>();
        type_url_is_the_full_name::<containerd_shim_protos::cgroups_v2::metrics::Metrics>();
    }

    #[test]
    fn event_log_reads_back_in_order_and_stops_at_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let p = Publisher::to_file(&path, "ns").unwrap();
        p.publish(TaskStart {
            container_id: "a".into(),
            pid: 7,
            ..Default::default()
        });
        p.publish(TaskExit {
            container_id: "a".into(),
            exit_status: 3,
            ..Default::default()
        });
        let log = proto::eventlog::read(&path).unwrap();
        let topics: Vec<_> = log.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["/tasks/start", "/tasks/exit"]);
        let exit = TaskExit::parse_from_bytes(&log[1].event.value).unwrap();
        assert_eq!((exit.container_id.as_str(), exit.exit_status), ("a", 3));
        // A record cut short by a killed shim ends the log.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(proto::eventlog::read(&path).unwrap().len(), 1);
    }
}
