// Live updates from the SSE stream `/v2/events`.
//
// Every stored event carries an `id:`, and a reconnection resumes after the last one seen, so
// nothing is missed. Two transports:
//
// - With no credentials, an EventSource: when the connection drops the browser reconnects by
//   itself and sends `Last-Event-ID`. When the stream is refused outright (the EventSource is
//   closed, not reconnecting), we ask the same URL once with fetch to learn why; anything but
//   401/403 is retried with a growing pause, resuming after the last id (`?lastEventId=`, which
//   the gateway accepts like the header).
// - With credentials (or once the API has asked for them), `fetch` and a small SSE reader over
//   its body, because EventSource cannot send an `Authorization` header. Reconnection is ours:
//   the same growing pause, with `Last-Event-ID`.
//
// A stream that answers 401 or 403 whatever we send falls back to polling every 5 s, and is
// tried again every minute.

import { authRequired, credentials } from './api.js';

/** Every event type Stride or Marathon may send (reference §9.2); SSE needs each named. */
const EVENT_TYPES = [
  'api_post_event', 'status_update_event', 'instance_changed_event',
  'instance_health_changed_event', 'unknown_instance_terminated_event', 'app_terminated_event',
  'add_health_check_event', 'remove_health_check_event', 'failed_health_check_event',
  'health_status_changed_event', 'unhealthy_instance_kill_event', 'unhealthy_task_kill_event',
  'group_change_success', 'group_change_failed', 'deployment_info', 'deployment_step_success',
  'deployment_step_failure', 'deployment_success', 'deployment_failed',
  'scheduler_registered_event', 'scheduler_reregistered_event', 'scheduler_disconnected_event',
  'pod_created_event', 'pod_updated_event', 'pod_deleted_event',
  'event_stream_attached', 'event_stream_detached', 'message',
];

const POLL_MS = 5000;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;
/** How often a polling UI looks whether the stream has become usable again. */
const STREAM_RETRY_WHILE_POLLING_MS = 60000;

export class Live {
  constructor(indicator) {
    this.indicator = indicator;
    this.listeners = new Set();
    this.source = null;
    this.lastId = '';
    this.state = 'connecting';
    this.retryMs = RETRY_MIN_MS;
    this.pollTimer = null;
    this.retryTimer = null;
    this.hadConnection = false;
    this.stopped = false;
    /** Aborts the fetch transport's request; null when that transport is not running. */
    this.abort = null;
  }

  /** `fn(type, data)` for every event; returns an unsubscribe function. */
  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(type, data) {
    for (const fn of this.listeners) {
      try { fn(type, data); } catch (e) { console.error(e); }
    }
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  /** Re-evaluates the transport, e.g. after a login or logout. */
  restart() {
    this.closeSource();
    this.stopPolling();
    clearTimeout(this.retryTimer);
    this.retryMs = RETRY_MIN_MS;
    this.connect();
  }

  setState(state, detail) {
    this.state = state;
    const el = this.indicator;
    if (!el) return;
    el.className = `conn conn-${state}`;
    const labels = {
      live: 'live', connecting: 'connecting', reconnecting: 'reconnecting',
      offline: 'offline', polling: 'polling',
    };
    el.querySelector('.conn-label').textContent = labels[state] || state;
    el.title = detail || {
      live: 'Event stream connected: views update as things change',
      connecting: 'Connecting to the event stream',
      reconnecting: 'The event stream was lost; reconnecting',
      offline: 'The API cannot be reached; retrying',
      polling: 'The event stream refused these credentials; refreshing every 5 s',
    }[state];
    el.dataset.state = state;
  }

  connect() {
    if (this.stopped) return;
    this.setState(this.hadConnection ? 'reconnecting' : 'connecting');
    if (credentials() || authRequired) {
      this.connectFetch();
      return;
    }
    const url = this.lastId ? `/v2/events?lastEventId=${encodeURIComponent(this.lastId)}` : '/v2/events';
    const source = new EventSource(url);
    this.source = source;
    source.onopen = () => this.opened();
    source.onerror = () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CONNECTING) {
        // The browser retries by itself, with Last-Event-ID.
        this.setState('reconnecting');
        return;
      }
      this.closeSource();
      this.diagnose();
    };
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (e) => {
        if (e.lastEventId) this.lastId = e.lastEventId;
        let data = {};
        try { data = JSON.parse(e.data); } catch { /* heartbeat or odd frame */ }
        this.emit(data.eventType || type, data);
      });
    }
  }

  opened() {
    const resumed = this.hadConnection;
    this.hadConnection = true;
    this.retryMs = RETRY_MIN_MS;
    this.stopPolling();
    this.setState('live');
    // Whatever happened while we were away: views refresh once.
    if (resumed) this.emit('reconnected', {});
  }

  /** The stream over fetch, with the session's `Authorization` and `Last-Event-ID`. */
  async connectFetch() {
    const ctl = new AbortController();
    this.abort = ctl;
    const headers = { Accept: 'text/event-stream' };
    const auth = credentials();
    if (auth) headers.Authorization = auth;
    if (this.lastId) headers['Last-Event-ID'] = this.lastId;
    let res;
    try {
      res = await fetch('/v2/events', { headers, signal: ctl.signal, cache: 'no-store', credentials: 'omit' });
    } catch {
      if (this.abort !== ctl) return; // closed meanwhile
      this.abort = null;
      this.retry(0);
      return;
    }
    if (this.abort !== ctl) { ctl.abort(); return; }
    if (!res.ok || !res.body) {
      this.abort = null;
      ctl.abort();
      if (res.status === 401 || res.status === 403) this.refused();
      else this.retry(res.status);
      return;
    }
    this.opened();
    try {
      await this.readStream(res.body, ctl);
    } catch {
      // Cut, or aborted by closeSource.
    }
    if (this.abort !== ctl) return;
    this.abort = null;
    this.setState('reconnecting');
    this.retry(-1);
  }

  /** Reads SSE frames (`event:`, `data:`, `id:`, comments) until the body ends. */
  async readStream(body, ctl) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let type = '';
    let data = [];
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.abort !== ctl) return;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line === '') {
          if (id !== null) this.lastId = id;
          if (data.length) {
            let parsed = {};
            try { parsed = JSON.parse(data.join('\n')); } catch { /* heartbeat or odd frame */ }
            this.emit(parsed.eventType || type || 'message', parsed);
          }
          type = '';
          data = [];
          id = null;
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const v = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') type = v;
        else if (field === 'data') data.push(v);
        else if (field === 'id') id = v;
      }
    }
  }

  closeSource() {
    if (this.abort) {
      const ctl = this.abort;
      this.abort = null;
      ctl.abort();
    }
    if (this.source) {
      this.source.onerror = null;
      this.source.onopen = null;
      this.source.close();
      this.source = null;
    }
  }

  /** The stream was refused: find out why with one fetch, then poll or retry. */
  async diagnose() {
    let status = 0;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      const headers = { Accept: 'text/event-stream' };
      const res = await fetch('/v2/events?event_type=none', { headers, signal: ctl.signal, cache: 'no-store', credentials: 'omit' });
      status = res.status;
    } catch {
      status = 0;
    } finally {
      clearTimeout(timer);
      ctl.abort();
    }
    if (status === 401 || status === 403) {
      this.refused();
      return;
    }
    this.retry(status);
  }

  /** The stream answered 401 or 403: poll, and try the stream again in a while. */
  refused() {
    this.startPolling(credentials() ? undefined : 'The event stream needs a login; refreshing every 5 s');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.restart(), STREAM_RETRY_WHILE_POLLING_MS);
  }

  /** Connects again after a growing pause; `status` 0 means unreachable, -1 a stream that ended. */
  retry(status) {
    if (status >= 0) {
      this.setState(status === 0 ? 'offline' : 'reconnecting', status ? `The event stream answered HTTP ${status}; retrying` : undefined);
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  startPolling(detail) {
    this.setState('polling', detail);
    if (this.pollTimer) return;
    this.emit('poll', {});
    this.pollTimer = setInterval(() => this.emit('poll', {}), POLL_MS);
  }

  stopPolling() {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
  }
}
