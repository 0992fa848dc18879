"""Keyboard shortcuts for reviewing and correcting labels, installed by a hidden gr.HTML's `js_on_load`.

a: accept · r: reject · n or →: next · p or ←: previous · u: undo · y: redo · c: clear the selection ·
[ and ]: brush size down / up (the Brush tab's editor). Ignored while typing in a field, with a
modifier key held, or when the curate panel is not on screen. The keys click the tab's buttons (by
elem_id), so a shortcut does exactly what the button does; the brush size is set on the editor's own
size slider (opened and closed again), so the editor keeps one source for it.
"""
from __future__ import annotations

import json

SHORTCUTS = {"a": "curate-accept", "r": "curate-reject", "n": "curate-next", "ArrowRight": "curate-next",
             "p": "curate-prev", "ArrowLeft": "curate-prev", "u": "curate-undo", "y": "curate-redo",
             "c": "curate-clear"}
BRUSH_KEYS = {"[": -5, "]": 5}
PANEL_ID = "curate-panel"
EDITOR_ID = "curate-editor"

KEYBOARD_JS = """
if (!window.__curateKeys) {
  window.__curateKeys = true;
  const keys = __KEYS__, brush = __BRUSH__;
  const setBrush = (delta) => {
    const ed = document.getElementById('__EDITOR__');
    if (!ed) return;
    let range = ed.querySelector('input[type=range]');
    const toggle = ed.querySelector("button[aria-label='Brush Size']");
    const opened = !range && toggle;
    if (opened) { toggle.click(); }
    setTimeout(() => {
      range = ed.querySelector('input[type=range]');
      if (range) {
        const v = Math.max(+range.min || 1, Math.min(+range.max || 100, (+range.value || 25) + delta));
        range.value = String(v);
        range.dispatchEvent(new Event('input', {bubbles: true}));
        range.dispatchEvent(new Event('change', {bubbles: true}));
        ed.dataset.brushSize = String(v);
      }
      if (opened) { document.body.dispatchEvent(new MouseEvent('mousedown', {bubbles: true})); }   // closes it
    }, 0);
  };
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target, tag = ((t && t.tagName) || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || tag === 'select' || (t && t.isContentEditable)) return;
    const panel = document.getElementById('__PANEL__');
    if (!panel || panel.offsetParent === null) return;
    if (e.key in brush) { e.preventDefault(); setBrush(brush[e.key]); return; }
    const id = keys[e.key];
    if (!id) return;
    const el = document.getElementById(id);
    const btn = el && (el.tagName === 'BUTTON' ? el : el.querySelector('button'));
    if (btn && !btn.disabled) { e.preventDefault(); btn.click(); }
  });
}
""".replace("__KEYS__", json.dumps(SHORTCUTS)).replace("__BRUSH__", json.dumps(BRUSH_KEYS)).replace(
    "__PANEL__", PANEL_ID).replace("__EDITOR__", EDITOR_ID)
