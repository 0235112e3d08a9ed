"""Our own component runtime (issue 12): components read and run over wasmtime's core API.

It lands in stages behind the seam in ``trio_isyswasfa/_engine.py``; until it passes the
whole suite, the stock component API stays the engine every instance runs on. Layout, after
wasmtime's own crate: ``_types`` (value and function types), ``_reader`` (the binary
format) and ``_model`` (what it reads into), ``_plan`` (a component's instantiation,
worked out once), ``_instance`` (core instances on wasmtime's core API, replaying the
plan), ``_layout`` (sizes, alignments, flattening), ``_abi`` (canonical ABI: lifting and
lowering, specialised per type; ``_codegen`` writes the code for records and variants),
``_handles`` (handle tables and borrow scopes), ``_values`` (the Python value shapes both
engines share).
"""
