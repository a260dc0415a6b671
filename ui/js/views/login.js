// The login form, shown when the API answers 401 (`WWW-Authenticate: Basic realm="Mesosphere"`):
// a user and password (HTTP Basic) or a bearer token (`<name>.<secret>`). The credentials live in
// sessionStorage (this tab only, gone when it closes) and go out as `Authorization` on every
// call; they are tried once on `GET /v2/whoami`, which needs nothing but valid credentials.

import { ApiError, clearCredentials, get, setCredentials, setToken } from '../api.js';
import { h, modal } from '../dom.js';

let open = null;

/** Shows the form once however many 401s arrive; resolves true after a successful login. */
export function showLogin() {
  if (open) return open;
  open = modal('Log in to Stride', (close) => {
    let mode = 'password';
    const user = h('input#login-user', { name: 'username', autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false', required: true });
    const pass = h('input#login-password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const token = h('input#login-token', { name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'name.secret' });
    const passwordFields = h('div.login-fields',
      h('label', { for: 'login-user' }, 'User'), user,
      h('label', { for: 'login-password' }, 'Password'), pass);
    const tokenFields = h('div.login-fields', { hidden: true },
      h('label', { for: 'login-token' }, 'Token'), token,
      h('p.hint', 'A token of the gateway\'s security file, as its holder was given it.'));
    const error = h('p.form-summary', { role: 'alert', hidden: true });
    const submit = h('button.primary', { type: 'submit' }, 'Log in');
    const tab = (m, label) => h('button', {
      type: 'button', role: 'tab', dataset: { loginMode: m }, class: m === mode ? 'active' : '',
      'aria-selected': String(m === mode),
      onclick: () => {
        mode = m;
        for (const b of tabs.querySelectorAll('button')) {
          const on = b.dataset.loginMode === mode;
          b.classList.toggle('active', on);
          b.setAttribute('aria-selected', String(on));
        }
        passwordFields.hidden = mode !== 'password';
        tokenFields.hidden = mode !== 'token';
        user.required = pass.required = mode === 'password';
        token.required = mode === 'token';
        error.hidden = true;
        (mode === 'token' ? token : user).focus();
      },
    }, label);
    const tabs = h('div.segmented.login-modes', { role: 'tablist', 'aria-label': 'How to log in' },
      tab('password', 'User and password'), tab('token', 'Token'));
    const form = h('form.login', {
      onsubmit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        error.hidden = true;
        if (mode === 'token') setToken(token.value); else setCredentials(user.value, pass.value);
        try {
          await get('/v2/whoami');
          close(true);
        } catch (err) {
          if (err instanceof ApiError && (err.status === 403 || err.status === 404)) {
            // Logged in (a gateway without /v2/whoami, or one that guards it): good enough.
            close(true);
            return;
          }
          clearCredentials();
          if (err instanceof ApiError && err.status === 401) {
            error.textContent = mode === 'token' ? 'This token is not valid.' : 'Wrong user name or password.';
          } else {
            error.textContent = err.message;
          }
          error.hidden = false;
          (mode === 'token' ? token : pass).select();
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('p.muted', 'The API asks for credentials. They are kept for this browser tab only.'),
    tabs,
    passwordFields,
    tokenFields,
    error,
    h('div.actions', submit));
    return form;
  }).then((v) => {
    open = null;
    return v === true;
  });
  return open;
}
