"""Signature verification for ocigitops: pure functions over bytes and parsed objects.

Inputs are what a registry client already fetched (payloads, annotations, bundles, notation
envelopes) plus trust material (keys, trusted roots, trust stores, policies); outputs are typed
results that name the verified digest and the signer. Nothing here touches the network.

Modules: ``keys`` (cosign key files), ``sigalg`` (raw signatures), ``simplesigning`` (legacy
``.sig`` layers signed with a key), ``legacy_keyless`` (``.sig`` layers with a Fulcio
certificate), ``rekor`` (SETs), ``bundles`` (sigstore bundles, key and keyless), ``identity``
(keyless identity policy), ``notation`` and ``trustpolicy`` (notation envelopes, trust policies
and stores), ``policy`` (authorities, the any/all/N rule, Flux's ``verify`` block),
``results`` (what verified and who signed), ``errors`` (typed failures).

The usual entry point is :func:`ocigitops.verifier.policy.evaluate` with a policy from
:func:`ocigitops.verifier.policy.parse_policy` or
:func:`ocigitops.verifier.policy.from_flux_verify` and the
:class:`ocigitops.verifier.policy.Candidates` the registry layer found for one digest.
"""
