"""The Git client of GitRepository: look up a ref, fetch one commit shallowly, verify its
signatures, archive its tree in Flux's artifact format. No ``git`` binary is run.

Library: ``dulwich`` (Apache-2.0, pure Python with optional C speed-ups). It speaks the
smart HTTP and SSH protocols, does a shallow fetch of one object (depth 1), reads packs
and objects, and lets us bound every read: we pin protocol v0/v1 so that a lookup is one
``GET info/refs``, pass our own urllib3 pool (private CA, mutual TLS, proxy, a bearer
token as a pool header, what git's ``http.extraHeader`` does: dulwich ignores its own
``extra_headers`` argument) and wrap its reads with the operation's deadline and byte cap.
``pygit2`` (libgit2) was the alternative: it pins SSH host keys only process-wide (one
``known_hosts`` for every tenant) and its reads cannot be bounded from Python.

SSH: a small dulwich vendor on ``paramiko`` (:mod:`.ssh`) with the Secret's
``known_hosts`` pinned per connection. Signatures: ``pysequoia`` for OpenPGP and
``sshsig`` for SSH (:mod:`.signatures` says why).

Modules, one job each: :mod:`.url` (which URLs), :mod:`.auth` (Secrets), :mod:`.transport`
(ls-remote and fetch, bounded), :mod:`.ssh`, :mod:`.pack` (pack pre-check), :mod:`.refs`
(ref precedence, revision strings), :mod:`.archive` (the tarball), :mod:`.signatures`,
:mod:`.client` (the two operations a reconcile calls).
"""
