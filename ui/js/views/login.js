// The login form, shown when the API answers 401 (`WWW-Authenticate: Basic realm="Mesosphere"`).
// Credentials live in sessionStorage (this tab only, gone when it closes) and go out as
// `Authorization: Basic …` on every fetch.

import { ApiError, clearCredentials, get, setCredentials } from '../api.js';
import { h, modal } from '../dom.js';

let open = null;

/** Shows the form once however many 401s arrive; resolves true after a successful login. */
export function showLogin() {
  if (open) return open;
  open = modal('Log in to Stride', (close) => {
    const user = h('input#login-user', { name: 'username', autocomplete: 'username', required: true });
    const pass = h('input#login-password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const error = h('p.form-summary', { role: 'alert', hidden: true });
    const submit = h('button.primary', { type: 'submit' }, 'Log in');
    const form = h('form.login', {
      onsubmit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        error.hidden = true;
        setCredentials(user.value, pass.value);
        try {
          await get('/v2/info');
          close(true);
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) {
            clearCredentials();
            error.textContent = 'Wrong user name or password.';
          } else {
            // Logged in, but e.g. not allowed to see /v2/info: good enough.
            if (err instanceof ApiError && err.status === 403) { close(true); return; }
            error.textContent = err.message;
          }
          error.hidden = false;
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('p.muted', 'The API asks for credentials. They are kept for this browser tab only.'),
    h('label', { for: 'login-user' }, 'User'), user,
    h('label', { for: 'login-password' }, 'Password'), pass,
    error,
    h('div.actions', submit));
    return form;
  }).then((v) => {
    open = null;
    return v === true;
  });
  return open;
}
