"""Keyboard shortcuts for reviewing labels, installed by a hidden gr.HTML's `js_on_load`.

a: accept · r: reject · n or →: next · p or ←: previous. Ignored while typing in a field,
with a modifier key held, or when the curate panel is not on screen. The keys click the
tab's buttons (by elem_id), so a shortcut does exactly what the button does.
"""
from __future__ import annotations

import json

SHORTCUTS = {"a": "curate-accept", "r": "curate-reject", "n": "curate-next", "ArrowRight": "curate-next",
             "p": "curate-prev", "ArrowLeft": "curate-prev"}
PANEL_ID = "curate-panel"

KEYBOARD_JS = """
if (!window.__curateKeys) {
  window.__curateKeys = true;
  const keys = __KEYS__;
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target, tag = ((t && t.tagName) || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || tag === 'select' || (t && t.isContentEditable)) return;
    const panel = document.getElementById('__PANEL__');
    if (!panel || panel.offsetParent === null) return;
    const id = keys[e.key];
    if (!id) return;
    const el = document.getElementById(id);
    const btn = el && (el.tagName === 'BUTTON' ? el : el.querySelector('button'));
    if (btn && !btn.disabled) { e.preventDefault(); btn.click(); }
  });
}
""".replace("__KEYS__", json.dumps(SHORTCUTS)).replace("__PANEL__", PANEL_ID)
