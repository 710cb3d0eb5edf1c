"""Compatibility with the reference dock's Python client (``learnware.client.LearnwareClient``).

The router is :mod:`learndock.server.routes.beimingwu` (served under ``/beimingwu``); the parts
it needs live here:

- :mod:`.forms` -- the client's request bodies (multipart with a file part, url-encoded forms,
  JSON), read with caps while they stream;
- :mod:`.chunks` -- the client's chunked upload, staged per account in the dock's temp folder;
- :mod:`.envelope` -- the reference's ``{code, msg, data}`` responses and its error codes;
- :mod:`.refzip` -- a stored learnware as a reference-format zip (cached by package sha256):
  reference uploads get their own layout back, learndock packages are wrapped by
  :mod:`.wrapper_model`, a model class that runs in the client's environment without learndock.
"""
