package flowtest

import "strings"

// Category is one section of CONFORMANCE.md. Adding a category means
// writing a table function and listing it here; every consumer (the
// tracer's unit tests, the conformance suite) picks it up.
type Category struct {
	// Letter is the CONFORMANCE.md section, "A".
	Letter string
	Title  string
	// Prefix is the item-ID prefix, "CIP".
	Prefix string
	// Items are the CONFORMANCE.md item IDs this category must cover; a
	// unit test fails if one has no case.
	Items []string
	Cases func() []Case
}

// Categories lists the categories with packet-flow tables, in
// CONFORMANCE.md order.
func Categories() []Category {
	return []Category{
		{
			Letter: "A", Title: "ClusterIP basics", Prefix: "CIP",
			Items: []string{"CIP-01", "CIP-02", "CIP-03", "CIP-05", "CIP-06", "CIP-07", "CIP-08", "CIP-10", "CIP-11"},
			Cases: clusterIPCases,
		},
		{
			Letter: "B", Title: "No endpoints: REJECT vs DROP", Prefix: "NOEP",
			Items: []string{"NOEP-01", "NOEP-02", "NOEP-03", "NOEP-05", "NOEP-06", "NOEP-07"},
			Cases: noEndpointsCases,
		},
		{
			Letter: "C", Title: "Endpoint conditions and terminating fallback", Prefix: "EPC",
			Items: []string{"EPC-01", "EPC-02", "EPC-03", "EPC-04", "EPC-06"},
			Cases: endpointConditionCases,
		},
		{
			Letter: "E", Title: "NodePort", Prefix: "NP",
			Items: []string{"NP-01", "NP-02", "NP-03", "NP-04", "NP-05", "NP-06", "NP-08"},
			Cases: nodePortCases,
		},
		{
			Letter: "F", Title: "ExternalIPs and LoadBalancer IPs", Prefix: "LB",
			Items: []string{"LB-01", "LB-02", "LB-03", "LB-04", "LB-06"},
			Cases: loadBalancerCases,
		},
		{
			// ETP-04 (health-check node port) and ETP-05 (switching the
			// policy) are checked with the health-check specs.
			Letter: "G", Title: "externalTrafficPolicy=Local", Prefix: "ETP",
			Items: []string{"ETP-01", "ETP-02", "ETP-03", "ETP-06"},
			Cases: externalTrafficPolicyCases,
		},
		{
			Letter: "H", Title: "internalTrafficPolicy=Local", Prefix: "ITP",
			Items: []string{"ITP-01", "ITP-02", "ITP-03"},
			Cases: internalTrafficPolicyCases,
		},
		{
			Letter: "I", Title: "Masquerade, source IP, hairpin", Prefix: "MASQ",
			Items: []string{"MASQ-01", "MASQ-02", "MASQ-03", "MASQ-04", "MASQ-05"},
			Cases: masqueradeCases,
		},
		{
			Letter: "K", Title: "Topology hints and trafficDistribution", Prefix: "TOPO",
			Items: []string{"TOPO-01", "TOPO-02", "TOPO-03"},
			Cases: topologyCases,
		},
		{
			Letter: "L", Title: "Dual-stack and IPv6", Prefix: "DS",
			Items: []string{"DS-01", "DS-02", "DS-03"},
			Cases: dualStackCases,
		},
		{
			Letter: "M", Title: "Services the datapath must not proxy", Prefix: "SKIP",
			Items: []string{"SKIP-01", "SKIP-03"},
			Cases: skipCases,
		},
	}
}

// All returns every case of every category.
func All() []Case {
	var out []Case
	for _, c := range Categories() {
		out = append(out, c.Cases()...)
	}
	return out
}

// CategoryOf returns the category an item ID belongs to.
func CategoryOf(id string) (Category, bool) {
	for _, c := range Categories() {
		if strings.HasPrefix(id, c.Prefix+"-") {
			return c, true
		}
	}
	return Category{}, false
}
