"""Depth Anything Studio's Gradio UI. It calls pipeline services; it never touches torch or SQL.

`studio.app.build_app(services)` builds the page from tab modules (see studio/app.py).
"""
