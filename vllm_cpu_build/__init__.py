"""Worker-side toolchain (``vllm-cpu-build``): one module per subcommand, and the parts they share.

Subcommands (``cli.py`` registers each): ``plan``, ``patch``, ``build``, ``isa``,
``verify``, ``smoke``, ``upload``, ``image``.

* build: ``build.py`` (options and phases) over ``buildenv.py`` (the release's
  build requirements, the managed venv), ``buildtools.py`` (interpreter,
  cmake, compiler gate), ``buildroot.py`` (host or bubblewrap root),
  ``fetchcontent.py`` (local FetchContent sources), ``abi3.py`` (stable ABI,
  final tags), ``finish.py`` (platform tag, strip, record inside);
* verify: ``verify.py`` (API, CLI) runs the checks of ``integrity.py`` (zip,
  RECORD, metadata, tags, twine), ``manylinux.py`` and ``contract.py`` (ISA,
  provenance) over ``wheelcheck.py`` (the wheel read once) and ``isa.py``;
* typed documents: ``results.py`` (what each subcommand prints), ``provenance.py``
  (the wheel's record), ``jsondoc.py`` (their JSON both ways), ``enums.py``
  (the closed sets: arch, smoke status ...);
* inputs: ``variants.py`` (variants.json), ``upstream.py`` (release lines),
  ``specs.py`` (one parser per input format), ``files.py`` (the one file
  loader), ``reqfiles.py`` (requirement files); ``errors.py`` the exit codes.

Imports nothing above it (no master, steps, farm, Buildbot).
"""
