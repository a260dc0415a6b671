//! Every metric the gateway emits, named once. Labels stay bounded: HTTP method and status
//! class, the name of a leader call and its outcome; never an app or task id.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Requests answered; labels `method` (GET, POST, …, `other`) and `status` (`2xx` … `5xx`).
pub const HTTP_REQUESTS: &str = "stride_api_gateway_http_requests_total";
/// Time to produce the response head, in seconds; label `method`.
pub const HTTP_REQUEST_DURATION: &str = "stride_api_gateway_http_request_duration_seconds";
/// Open `/v2/events` streams (set, never incremented: StatsD drops gauge increments).
pub const EVENT_STREAMS_ACTIVE: &str = "stride_api_gateway_event_streams_active";
/// SSE clients disconnected because they fell more than `event_buffer` events behind.
pub const EVENT_STREAMS_LAGGED: &str = "stride_api_gateway_event_streams_lagged_total";
/// Events read from the store's stream by the tail task.
pub const EVENTS_READ: &str = "stride_api_gateway_events_read_total";
/// Calls to the leader's `Control` service; labels `call` and `outcome` (`ok`, `error`, `no_leader`).
pub const LEADER_CALLS: &str = "stride_api_gateway_leader_calls_total";

/// Registers descriptions with the recorder; called once at start-up.
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method and status class"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to produce the response head"
    );
    describe_gauge!(EVENT_STREAMS_ACTIVE, "Open /v2/events streams");
    describe_counter!(
        EVENT_STREAMS_LAGGED,
        "SSE clients disconnected for falling behind"
    );
    describe_counter!(EVENTS_READ, "Events read from the store's event stream");
    describe_counter!(
        LEADER_CALLS,
        "gRPC calls to the scheduler leader, by call and outcome"
    );
}
