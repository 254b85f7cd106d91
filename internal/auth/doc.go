package auth

// Design
//
// Authentication (authn.go) follows kube-apiserver: a Union of a client
// certificate authenticator (CN = user, O = groups, verified against the
// cluster CA) and a bearer token authenticator backed by a token file in
// kube-apiserver's --token-auth-file format (tokens.go). Middleware puts the
// user in the request context; requests without credentials reach only the
// public paths, everything else gets upstream's 401 Status.
//
// Authorization (authz.go) is a fixed rule set, NodeAuthorizer, instead of
// RBAC objects: system:masters may do everything, system:nodes may read
// everything and write only what a node agent writes, other users only
// discovery. Denials are ForbiddenErrors whose text is upstream's forbidden
// message; ForbiddenStatus wraps them into the 403 Status.
//
// Node credentials. Upstream nodes bootstrap with a token that may only
// create a CSR, then use a per-node client certificate (system:node:<name>).
// svcnet keeps one step: a shared join token (user JoinUser,
// "system:nodes:join", group system:nodes) that every agent uses directly.
// Because the token does not name a node, the authorizer cannot pin it to
// one Node; it may write any Node, node Lease, pod status and Event, and
// delete pods, but nothing else (no Services, Endpoints, Deployments...).
// Token file lines with a "system:node:<name>" user get the stricter
// per-node rule for Nodes and Leases.
//
// PKI (pki.go): one ECDSA P-256 CA per data directory, created once and
// never replaced; leaf certificates (apiserver serving, admin client, etcd
// server and client) are reissued on start when missing, near expiry, or —
// for the serving certificate — missing a requested SAN.
