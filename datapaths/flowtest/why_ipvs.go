package flowtest

// Where kube-proxy's IPVS mode behaves differently from iptables mode, the
// flow tables expect IPVS's own behaviour (.On("ipvs", ...)) with one of
// these reasons beside it. Each names the mechanism in pkg/proxy/ipvs.
const (
	// WhyIPVSLocalNoEndpoint: the ClusterIP virtual server exists whatever
	// the endpoints. syncEndpoint (pkg/proxy/ipvs/proxier.go), asked for
	// node-local endpoints (iTP=Local) and finding none, falls back to
	// CategorizeEndpoints' cluster endpoints, which are empty for a
	// Service that is not externally accessible. The IPVS mode writes no
	// DROP rule for it (the iptables mode's KUBE-SVL "no local endpoints"
	// drop has no counterpart), so the packet reaches a virtual server
	// without real servers, and IPVS itself answers it with ICMP port
	// unreachable (ip_vs_leave in net/netfilter/ipvs/ip_vs_core.c).
	WhyIPVSLocalNoEndpoint = "kube-proxy ipvs: iTP=Local with no local endpoint leaves the ClusterIP virtual server without real servers (no DROP rule), and IPVS answers ICMP port unreachable"
	// whyIPVSNoShortCircuit: IPVS cannot pick real servers by client, so
	// there is no counterpart of the iptables mode's KUBE-EXT chain that
	// sends in-cluster clients of an eTP=Local Service to every endpoint.
	// syncProxyRules calls syncEndpoint(..., svcInfo.ExternalPolicyLocal(),
	// ...) for the externalIP, LB IP and NodePort virtual servers: they
	// hold the node's local endpoints when it has any, whoever the client
	// is; KUBE-LOAD-BALANCER-LOCAL and KUBE-NODE-PORT-LOCAL-* RETURN before
	// the masquerade mark.
	whyIPVSNoShortCircuit = "kube-proxy ipvs: no eTP=Local short-circuit for pods or the node; the externalIP, LB IP and NodePort virtual servers hold only the local endpoints, whoever the client is"
	// whyIPVSOwnExternalIP: the externalIP is bound on kube-ipvs0 of every
	// node, so the node's own connection to it leaves from the externalIP
	// itself. For eTP=Local, syncProxyRules writes no KUBE-MARK-MASQ rule
	// for KUBE-EXTERNAL-IP-LOCAL (only the ACCEPT rules of
	// externalIPRules), so the connection reaches the remote endpoint
	// (syncEndpoint's fallback to the cluster endpoints, kubernetes#97081)
	// unmasqueraded, and the reply goes to an address the endpoint's own
	// node also holds: the client never hears back.
	whyIPVSOwnExternalIP = "kube-proxy ipvs: the node's own connection to an eTP=Local externalIP leaves from the externalIP (bound on kube-ipvs0) and is not masqueraded, so the remote endpoint's reply never comes back"
	// whyIPVSNoDetector: without a local-traffic detector, syncProxyRules
	// masquerades "-m set --match-set KUBE-CLUSTER-IP src,dst": the VIPs
	// are local addresses on kube-ipvs0, so the node's own connection to
	// a ClusterIP leaves from the VIP, which the endpoint could not answer.
	whyIPVSNoDetector = "kube-proxy ipvs: without a local-traffic detector it masquerades KUBE-CLUSTER-IP src,dst, which the node's own connections match (they leave from the VIP on kube-ipvs0)"
	// WhyIPVSAffinityLinger: ClientIP affinity is IPVS persistence. A
	// persistence template does not expire while a connection it created
	// is still in IPVS' connection table (ip_vs_conn_expire re-arms it),
	// and a TCP connection closed with FIN stays there for the TIME_WAIT
	// timeout, hard-coded to 2 minutes (tcp_timeouts in
	// net/netfilter/ipvs/ip_vs_proto_tcp.c; kube-proxy sets only the
	// established, FIN_WAIT and UDP timeouts, none by default). Affinity
	// therefore lasts about 120 s + timeoutSeconds after the last
	// connection closes, not timeoutSeconds; Kubernetes' e2e test uses a
	// timeout of at least 125 s in IPVS mode for this reason.
	WhyIPVSAffinityLinger = "kube-proxy ipvs: ClientIP affinity is IPVS persistence, whose template outlives timeoutSeconds while its connections linger in IPVS' TIME_WAIT (120 s): affinity expires ~120 s + timeoutSeconds after the last connection closes"
)
