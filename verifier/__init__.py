"""Signature verification for ocigitops: pure functions over bytes and parsed objects.

Inputs are what a registry client already fetched (payloads, annotations, bundles, notation
envelopes) plus trust material (keys, trusted roots, trust stores, policies); outputs are typed
results that name the verified digest and the signer. Nothing here touches the network.

Modules: ``keys`` (cosign key files), ``sigalg`` (raw signatures), ``simplesigning`` (legacy
``.sig`` layers), ``rekor`` (SETs), ``bundles`` (sigstore bundles), ``identity`` (keyless
identity policy), ``notation`` and ``trustpolicy`` (notation envelopes and trust policies),
``policy`` (authorities and the any/all/N rule).
"""
