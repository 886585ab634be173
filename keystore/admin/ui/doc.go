// Package ui owns Keygate's key console: the browser page the admin
// listener serves at /ui/, from which an operator (or, with an org-bound
// admin token, a customer org) lists, creates, rotates, deactivates and
// revokes keys and reads their usage and audit trail.
//
// It owns the page's assets and the headers they are served with, nothing
// else: the page holds no secret and no rights of its own. Every action is
// a call of the admin API from the browser with the admin token the user
// signed in with (kept in a module variable for the tab, never in storage,
// cookies or URLs), so the console can do exactly what the API lets that
// token do, and the audit log records each call.
//
// Contracts:
//   - The assets are embedded (go:embed): plain HTML, CSS and JavaScript
//     modules, no build step and nothing fetched from elsewhere.
//   - Every answer carries a Content-Security-Policy that allows scripts,
//     styles, images and connections from the page's own origin only, no
//     inline script or style attribute, and no framing (clickjacking a
//     Revoke button); the assets are written to run under it.
//   - The page builds its DOM from API data with textContent, never
//     innerHTML: key names are chosen by whoever holds a token, a
//     customer's included.
package ui
