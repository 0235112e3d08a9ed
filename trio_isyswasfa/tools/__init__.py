"""Build-time tools: WIT lowering and componentize wrappers.

These run ``wasm-tools`` and ``componentize-py`` as subprocesses; nothing here is
used while a component runs.
"""
