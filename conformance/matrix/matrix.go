// Package matrix is the conformance suite's machine-readable verdict: for
// every CONFORMANCE.md item and every datapath that ran, pass, fail, skip,
// deviation or missing, with the reason and how long it took. The suite
// (conformance/) writes it after every run; `proxyrig conformance` prints it
// as a table; the reports read it.
//
// The JSON format is documented in conformance/README.md ("The matrix").
package matrix

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Version is the format version Save writes. Load refuses newer versions:
// a reader that does not know a field's meaning must not guess it.
const Version = 1

// Statuses of a Result.
const (
	// StatusPass: every spec of the item that ran passed, with kube-proxy
	// iptables mode's expectation.
	StatusPass = "pass"
	// StatusFail: at least one spec of the item failed.
	StatusFail = "fail"
	// StatusSkip: no spec of the item ran to a verdict; Reason says why
	// ("kernel lacks SCTP sockets"). Benchmark items are skip too: the load
	// generator measures them, not this suite.
	StatusSkip = "skip"
	// StatusDeviation: the item passed, but at least one spec held the
	// datapath to a per-datapath expectation that kube-proxy itself
	// documents (CONFORMANCE.md Appendix 1); Reason cites the divergence.
	StatusDeviation = "deviation"
	// StatusMissing: the suite has no spec for the item on this datapath.
	// It is a gap in the suite, shown so that it is never silently absent.
	StatusMissing = "missing"
)

// Statuses lists every status, in the order tables and legends use.
func Statuses() []string {
	return []string{StatusPass, StatusDeviation, StatusFail, StatusSkip, StatusMissing}
}

// Matrix is one conformance run: every item × every datapath that ran.
type Matrix struct {
	// Version is the format version (matrix.Version when written).
	Version int `json:"version"`
	// Generated is when the run finished.
	Generated time.Time `json:"generated"`
	// Env is where the run happened.
	Env Env `json:"env"`
	// Results holds one entry per item and datapath, in CONFORMANCE.md
	// order, then by datapath name. Items the suite covers that are not in
	// CONFORMANCE.md follow the listed ones.
	Results []Result `json:"results"`
	// Unassigned lists specs that ran for a datapath but carry no item
	// label, so they count toward no item. It should be empty.
	Unassigned []string `json:"unassigned,omitempty"`
	// SuiteFailures are failures of the suite as a whole rather than of a
	// spec ("Detected pending specs and --fail-on-pending is set").
	SuiteFailures []string `json:"suiteFailures,omitempty"`
}

// Env is the environment a run happened in. Figures and verdicts from an
// emulated run (the VM runner) are labelled as such.
type Env struct {
	// Kernel is the kernel release the suite ran on (uname -r): the guest's
	// inside the VM runner.
	Kernel string `json:"kernel"`
	// IPTablesBackend is the iptables flavour iptables-based datapaths
	// used: "legacy" or "nft".
	IPTablesBackend string `json:"iptablesBackend"`
	// Emulated is true inside the VM runner (PROXYRIG_EMULATED=1), whose
	// CPU is emulated: durations are not comparable with native ones.
	Emulated bool `json:"emulated"`
	// Arch is GOOS/GOARCH.
	Arch string `json:"arch,omitempty"`
	// CI is true when the run had CI=true, under which a skip of something
	// the machine can run is a failure.
	CI bool `json:"ci,omitempty"`
	// LabelFilter is the ginkgo label filter of the run, if any
	// ("datapath:iptables").
	LabelFilter string `json:"labelFilter,omitempty"`
	// ParallelProcesses is how many ginkgo processes shared the run.
	ParallelProcesses int `json:"parallelProcesses,omitempty"`
}

// Where is "native" or "emulated (VM)".
func (e Env) Where() string {
	if e.Emulated {
		return "emulated (VM)"
	}
	return "native"
}

// Result is one item on one datapath.
type Result struct {
	// Item is the CONFORMANCE.md item ID, "CIP-01".
	Item string `json:"item"`
	// Category is the item's CONFORMANCE.md section letter, "A".
	Category string `json:"category"`
	// Datapath is the datapath's registered name, "iptables".
	Datapath string `json:"datapath"`
	// Status is one of the Status* constants.
	Status string `json:"status"`
	// Reason says why, for every status but a plain pass: the first failure
	// message, the skip reason, the documented divergence, or what is
	// missing. A pass with some specs skipped says which and why.
	Reason string `json:"reason,omitempty"`
	// Duration is the time the item's specs ran, summed (lab builds
	// included). JSON: integer nanoseconds.
	Duration time.Duration `json:"duration"`
	// Spec is the full text of the spec that decided the status: the first
	// failing one, else the first deviating one, else the first one run.
	Spec string `json:"spec,omitempty"`
	// Location is that spec's file:line.
	Location string `json:"location,omitempty"`
	// Specs counts the item's specs on this datapath by outcome.
	Specs Counts `json:"specs"`
}

// Counts are spec counts by outcome.
type Counts struct {
	Passed  int `json:"passed"`
	Failed  int `json:"failed"`
	Skipped int `json:"skipped"`
	// NotRun specs exist but never started: filtered out by the label
	// filter or focus, or the suite stopped first.
	NotRun int `json:"notRun,omitempty"`
}

// Total is every spec counted.
func (c Counts) Total() int { return c.Passed + c.Failed + c.Skipped + c.NotRun }

// Datapaths lists the datapaths with results, sorted.
func (m *Matrix) Datapaths() []string {
	var dps []string
	for _, r := range m.Results {
		if !slices.Contains(dps, r.Datapath) {
			dps = append(dps, r.Datapath)
		}
	}
	slices.Sort(dps)
	return dps
}

// Lookup returns the result for one item on one datapath.
func (m *Matrix) Lookup(item, datapath string) (Result, bool) {
	for _, r := range m.Results {
		if r.Item == item && r.Datapath == datapath {
			return r, true
		}
	}
	return Result{}, false
}

// Failed reports whether any item failed or the suite itself failed.
func (m *Matrix) Failed() bool {
	if len(m.SuiteFailures) > 0 {
		return true
	}
	for _, r := range m.Results {
		if r.Status == StatusFail {
			return true
		}
	}
	return false
}

// Tally counts results by status, for one datapath ("" for all).
func (m *Matrix) Tally(datapath string) map[string]int {
	t := map[string]int{}
	for _, r := range m.Results {
		if datapath == "" || r.Datapath == datapath {
			t[r.Status]++
		}
	}
	return t
}

// Load reads a matrix written by Save.
func Load(path string) (*Matrix, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read conformance matrix: %w", err)
	}
	var m Matrix
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse conformance matrix %s: %w", path, err)
	}
	if m.Version == 0 {
		return nil, fmt.Errorf("parse conformance matrix %s: no version field: not a conformance matrix", path)
	}
	if m.Version > Version {
		return nil, fmt.Errorf("conformance matrix %s has format version %d; this build reads up to %d", path, m.Version, Version)
	}
	for i, r := range m.Results {
		if !slices.Contains(Statuses(), r.Status) {
			return nil, fmt.Errorf("conformance matrix %s: result %d (%s on %s) has unknown status %q", path, i, r.Item, r.Datapath, r.Status)
		}
	}
	return &m, nil
}

// Save writes the matrix as indented JSON, creating the directory. It
// writes a temporary file and renames it, so a reader never sees half a
// matrix.
func (m *Matrix) Save(path string) error {
	if m.Version == 0 {
		m.Version = Version
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode conformance matrix: %w", err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create directory for conformance matrix: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".conformance-matrix-*.json")
	if err != nil {
		return fmt.Errorf("write conformance matrix: %w", err)
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write conformance matrix %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write conformance matrix: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write conformance matrix: %w", err)
	}
	return nil
}

// Category is a CONFORMANCE.md section.
type Category struct {
	Letter string // "A"
	Title  string // "ClusterIP basics"
	Prefix string // item-ID prefix, "CIP"
}

// Item is one CONFORMANCE.md checklist item.
type Item struct {
	ID       string // "CIP-01"
	Title    string
	Category string // section letter, "A"
	// Benchmark items are measured by the load generator (proxyrig bench),
	// not checked by the conformance suite; without a spec they are
	// recorded as skip, not missing.
	Benchmark bool
}

// BenchmarkOwner says who measures the benchmark items.
const BenchmarkOwner = "benchmark: measured by the load generator (proxyrig bench), not by the conformance suite"

// Categories lists CONFORMANCE.md's sections A to N, in order.
func Categories() []Category {
	return []Category{
		{"A", "ClusterIP basics", "CIP"},
		{"B", "No endpoints: REJECT vs DROP", "NOEP"},
		{"C", "Endpoint conditions & terminating fallback", "EPC"},
		{"D", "Conntrack behaviour & endpoint churn", "CT"},
		{"E", "NodePort", "NP"},
		{"F", "ExternalIPs & LoadBalancer IPs", "LB"},
		{"G", "externalTrafficPolicy=Local & health checks", "ETP"},
		{"H", "internalTrafficPolicy=Local", "ITP"},
		{"I", "Masquerade, source IP, hairpin", "MASQ"},
		{"J", "Session affinity", "AFF"},
		{"K", "Topology hints / trafficDistribution", "TOPO"},
		{"L", "Dual-stack & IPv6", "DS"},
		{"M", "Services the datapath must NOT proxy", "SKIP"},
		{"N", "Sync correctness, resilience, scale", "SYNC"},
	}
}

// CategoryOf returns the section an item ID belongs to, by its prefix.
func CategoryOf(id string) (Category, bool) {
	prefix, _, ok := strings.Cut(id, "-")
	if !ok {
		return Category{}, false
	}
	for _, c := range Categories() {
		if c.Prefix == prefix {
			return c, true
		}
	}
	return Category{}, false
}

// Items lists every CONFORMANCE.md item, A to N, in document order. The
// numbering has gaps exactly where CONFORMANCE.md's has; a unit test
// compares the list with the document when it is at hand.
func Items() []Item {
	items := []Item{
		// A. ClusterIP basics
		{ID: "CIP-01", Title: "Pod→ClusterIP is DNATed to an endpoint without SNAT"},
		{ID: "CIP-02", Title: "Multiple endpoints are all used, uniformly"},
		{ID: "CIP-03", Title: "targetPort remapping"},
		{ID: "CIP-05", Title: "Wrong port / wrong protocol on a live ClusterIP is not forwarded"},
		{ID: "CIP-06", Title: "Unallocated IP inside the Service CIDR"},
		{ID: "CIP-07", Title: "Multi-port service with named targetPorts resolved per endpoint"},
		{ID: "CIP-08", Title: "Selector-less Service fed by several custom EndpointSlices"},
		{ID: "CIP-10", Title: "Large payloads survive the datapath"},
		{ID: "CIP-11", Title: "SCTP services"},
		// B. No endpoints: REJECT vs DROP
		{ID: "NOEP-01", Title: "ClusterIP with zero endpoints is REJECTed (fast failure, not timeout)"},
		{ID: "NOEP-02", Title: "Every entry point of an endpoint-less Service REJECTs, for pods and external clients, TCP and UDP"},
		{ID: "NOEP-03", Title: "Endpoints present but none usable ⇒ REJECT"},
		{ID: "NOEP-05", Title: "eTP=Local external traffic to a node with no local endpoint is DROPped (not REJECTed)"},
		{ID: "NOEP-06", Title: "iTP=Local with no local endpoint ⇒ DROP; with no endpoints at all ⇒ REJECT"},
		{ID: "NOEP-07", Title: "eTP=Local, only terminating endpoints on remote nodes"},
		// C. Endpoint conditions & terminating fallback
		{ID: "EPC-01", Title: "Ready endpoints are preferred over terminating ones"},
		{ID: "EPC-02", Title: "With no ready endpoints, serving-terminating endpoints are used (Cluster policy)"},
		{ID: "EPC-03", Title: "Local-policy fallback uses only local serving-terminating endpoints"},
		{ID: "EPC-04", Title: "Non-serving endpoints are never used, even as fallback"},
		{ID: "EPC-06", Title: "healthCheckNodePort counts only ready local endpoints; traffic still flows to terminating ones"},
		// D. Conntrack behaviour & endpoint churn
		{ID: "CT-01", Title: "UDP flows re-steer after their endpoint is removed (stale conntrack flushed)"},
		{ID: "CT-03", Title: "iTP=Local UDP: black-hole entry cleared when a local endpoint reappears"},
		{ID: "CT-04", Title: "Conntrack cleanup is precise"},
		{ID: "CT-05", Title: "Packets conntrack deems INVALID are dropped"},
		{ID: "CT-06", Title: "Node conntrack tunables: CLOSE_WAIT timeout"},
		// E. NodePort
		{ID: "NP-01", Title: "External→NodePort reaches all endpoints, SNATed (eTP=Cluster)"},
		{ID: "NP-02", Title: "Which node addresses accept NodePorts"},
		{ID: "NP-03", Title: "Node (host netns) → its own NodePort"},
		{ID: "NP-04", Title: "localhost NodePorts (127.0.0.1:NP)"},
		{ID: "NP-05", Title: "Pod → NodePort (local node and remote node), all address families"},
		{ID: "NP-06", Title: "Deleting a NodePort service stops forwarding and frees the port"},
		{ID: "NP-08", Title: "NodePort bypasses loadBalancerSourceRanges"},
		// F. ExternalIPs & LoadBalancer IPs
		{ID: "LB-01", Title: "ExternalIP not assigned to any node is still intercepted"},
		{ID: "LB-02", Title: "ExternalIP / LB IP with eTP=Cluster: all endpoints, always SNATed"},
		{ID: "LB-03", Title: "Every LB ingress IP is served"},
		{ID: "LB-04", Title: "loadBalancerSourceRanges enforcement"},
		{ID: "LB-06", Title: "LB without NodePorts (allocateLoadBalancerNodePorts=false)"},
		// G. externalTrafficPolicy=Local & health checks
		{ID: "ETP-01", Title: "External traffic to eTP=Local goes only to local endpoints and keeps the client IP"},
		{ID: "ETP-02", Title: "In-cluster clients of an eTP=Local service are short-circuited to all endpoints"},
		{ID: "ETP-03", Title: "eTP applies only to external entry points"},
		{ID: "ETP-04", Title: "healthCheckNodePort contract"},
		{ID: "ETP-05", Title: "Switching eTP at runtime"},
		{ID: "ETP-06", Title: "Pod → own node's NodePort with eTP=Local is implementation-defined"},
		// H. internalTrafficPolicy=Local
		{ID: "ITP-01", Title: "iTP=Local ClusterIP uses only endpoints on the client's node"},
		{ID: "ITP-02", Title: "iTP affects only ClusterIP traffic and never masquerading"},
		{ID: "ITP-03", Title: "Endpoint categorisation when eTP and iTP/topology disagree"},
		// I. Masquerade, source IP, hairpin
		{ID: "MASQ-01", Title: "Pod source IP is preserved through ClusterIP (cross-node)"},
		{ID: "MASQ-02", Title: "Non-pod sources to ClusterIP are masqueraded; masqueradeAll changes that"},
		{ID: "MASQ-03", Title: "Hairpin: a backend reaching itself via its Service"},
		{ID: "MASQ-04", Title: "eTP=Cluster external entry points always SNAT (incl. pod sources)"},
		{ID: "MASQ-05", Title: "SNAT port allocation is fully random"},
		// J. Session affinity
		{ID: "AFF-01", Title: "ClientIP affinity on ClusterIP"},
		{ID: "AFF-02", Title: "Switching affinity None ↔ ClientIP at runtime"},
		{ID: "AFF-03", Title: "Affinity via NodePort and LB IPs"},
		{ID: "AFF-04", Title: "Affinity timeout expires"},
		{ID: "AFF-05", Title: "UDP affinity"},
		// K. Topology hints / trafficDistribution
		{ID: "TOPO-01", Title: "PreferClose / PreferSameZone keeps traffic in-zone, falls back cluster-wide"},
		{ID: "TOPO-02", Title: "When zone hints must be ignored"},
		{ID: "TOPO-03", Title: "PreferSameNode (hints.forNodes)"},
		// L. Dual-stack & IPv6
		{ID: "DS-01", Title: "IPv6 single-stack parity"},
		{ID: "DS-02", Title: "Dual-stack Services use per-family slices and both ClusterIPs"},
		{ID: "DS-03", Title: "Full granular check suite on the secondary family"},
		// M. Services the datapath must NOT proxy
		{ID: "SKIP-01", Title: "Headless and ExternalName services produce no datapath state"},
		{ID: "SKIP-03", Title: "Service deletion/recreation"},
		// N. Sync correctness, resilience, scale
		{ID: "SYNC-01", Title: "Endpoint updates propagate"},
		{ID: "SYNC-02", Title: "Incremental sync is exact"},
		{ID: "SYNC-04", Title: "Proxy restart"},
		{ID: "SYNC-05", Title: "Rolling-update disruption budget (benchmark)", Benchmark: true},
		{ID: "SYNC-06", Title: "Large-cluster behaviour", Benchmark: true},
		{ID: "SYNC-07", Title: "Programming-latency / throughput benchmarks", Benchmark: true},
	}
	for i := range items {
		c, _ := CategoryOf(items[i].ID)
		items[i].Category = c.Letter
	}
	return items
}

// ItemByID finds an item of Items.
func ItemByID(id string) (Item, bool) {
	for _, it := range Items() {
		if it.ID == id {
			return it, true
		}
	}
	return Item{}, false
}
