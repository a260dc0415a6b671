// A live tail of a task's stdout or stderr through the sandbox route
// `GET /v2/tasks/{taskId}/files/read?path=<file>&offset=<n>&length=<n>` (Mesos' files/read:
// `{"data": "...", "offset": n}`; `offset=-1` answers the file's current size). The tail starts
// with the last 64 KiB and then polls from the returned offset plus the bytes read. The event
// stream says nothing about file contents, so this is the one place the UI polls.

import { ApiError, get } from '../api.js';
import { h, mount } from '../dom.js';

const INITIAL_BYTES = 64 * 1024;
const CHUNK = 64 * 1024;
const POLL_MS = 1000;
/** Text kept on screen; older output is dropped from the top. */
const KEEP_CHARS = 512 * 1024;

const utf8 = new TextEncoder();

export class LogTail {
  constructor(taskId, file) {
    this.taskId = taskId;
    this.file = file;
    this.offset = 0;
    this.timer = null;
    this.stopped = false;
    this.following = true;
    this.pre = h('pre.log', { tabindex: '0', 'aria-label': `${file} of ${taskId}`, dataset: { file } });
    this.status = h('p.log-status.muted', { role: 'status' }, 'Loading…');
    this.el = h('div.log-box', this.status, this.pre);
  }

  url(offset, length) {
    const q = new URLSearchParams({ path: this.file, offset: String(offset) });
    if (length !== undefined) q.set('length', String(length));
    return `/v2/tasks/${encodeURIComponent(this.taskId)}/files/read?${q}`;
  }

  async start() {
    this.schedule(0);
  }

  /** Finds the end of the file and shows the last 64 KiB before it. */
  async open() {
    const size = await get(this.url(-1));
    const end = Math.max(0, Number(size && size.offset) || 0);
    this.offset = Math.max(0, end - INITIAL_BYTES);
    if (this.offset > 0) this.append(`… (${this.offset} earlier bytes not shown)\n`, true);
    this.opened = true;
  }

  setFollowing(on) {
    this.following = on;
    if (on) this.schedule();
    else clearTimeout(this.timer);
  }

  schedule(ms = POLL_MS) {
    clearTimeout(this.timer);
    if (this.stopped || (!this.following && this.opened)) return;
    this.timer = setTimeout(() => this.tick(), ms);
  }

  async tick() {
    try {
      if (!this.opened) await this.open();
      await this.readMore();
      this.setStatus('');
    } catch (e) {
      if (this.fail(e)) return;
      this.schedule(POLL_MS * 3);
      return;
    }
    this.schedule();
  }

  /** Reads until the end of the file as it is now. */
  async readMore() {
    for (let i = 0; i < 16 && !this.stopped; i++) {
      const r = await get(this.url(this.offset, CHUNK));
      const data = (r && typeof r.data === 'string') ? r.data : '';
      if (!data) return;
      this.offset += utf8.encode(data).length;
      this.append(data);
      if (utf8.encode(data).length < CHUNK) return;
    }
  }

  append(text, muted = false) {
    const pre = this.pre;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    if (muted) pre.appendChild(h('span.muted', text));
    else pre.appendChild(document.createTextNode(text));
    if (pre.textContent.length > KEEP_CHARS) {
      const all = pre.textContent;
      pre.textContent = all.slice(all.length - KEEP_CHARS);
    }
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  setStatus(text, kind = 'muted') {
    this.status.className = `log-status ${kind}`;
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  /** Shows what went wrong; true when it is final (the route is not there). */
  fail(e) {
    // No route (a gateway without sandbox access), or a task the store no longer knows: final.
    // A missing file or an agent out of reach may come right, so those are retried.
    const final = e instanceof ApiError && (e.status === 501
      || (e.status === 404 && /^(URI not found|Task '.*' does not exist)/.test(e.message)));
    if (e instanceof ApiError && e.status === 404 && !final) {
      this.setStatus(`Logs not available yet: ${e.message} (retrying)`, 'notice');
      return false;
    }
    if (final) {
      this.unavailable = true;
      this.setStatus(`Logs not available: ${e.message}`, 'notice');
      this.status.dataset.unavailable = 'true';
      mount(this.pre);
      this.pre.hidden = true;
      this.stop();
      return true;
    }
    this.setStatus(`Cannot read ${this.file}: ${e.message} (retrying)`, 'notice notice-error');
    return false;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
