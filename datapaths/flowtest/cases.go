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
			Letter: "E", Title: "NodePort", Prefix: "NP",
			Items: []string{"NP-01", "NP-02", "NP-03", "NP-04", "NP-05", "NP-06", "NP-08"},
			Cases: nodePortCases,
		},
		{
			Letter: "I", Title: "Masquerade, source IP, hairpin", Prefix: "MASQ",
			Items: []string{"MASQ-01", "MASQ-02", "MASQ-03", "MASQ-04", "MASQ-05"},
			Cases: masqueradeCases,
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
