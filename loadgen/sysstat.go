package loadgen

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cpuTime is the CPU time this process and its reaped children (the
// iptables-restore, nft … a datapath execs) have used so far, user plus
// system. Children count only once waited for, which exec.Cmd.Run does
// before a Sync returns.
func cpuTime() time.Duration {
	var self, kids unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self)
	_ = unix.Getrusage(unix.RUSAGE_CHILDREN, &kids)
	tv := func(t unix.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}

// userHZ is the unit of /proc/stat: USER_HZ, 100 on every Linux
// architecture proxyrig runs on (the kernel exports it fixed, whatever
// CONFIG_HZ is).
const userHZ = 100

// kernelCPU is the machine-wide time all CPUs spent in the kernel: system
// (syscalls), irq and softirq (where packets are processed), from the
// first line of /proc/stat.
type kernelCPU struct {
	system, irq, softirq uint64 // USER_HZ ticks
}

func readKernelCPU() (kernelCPU, error) {
	v, err := readStatCPU()
	if err != nil {
		return kernelCPU{}, err
	}
	return kernelCPU{system: v[2], irq: v[5], softirq: v[6]}, nil
}

// cpuTicks is the first line of /proc/stat summed two ways: every state's
// ticks, and steal, the time this VM's virtual CPUs were ready to run but
// the hypervisor ran something else.
type cpuTicks struct {
	total, steal uint64
}

func readCPUTicks() (cpuTicks, error) {
	v, err := readStatCPU()
	if err != nil {
		return cpuTicks{}, err
	}
	return ticksOf(v), nil
}

// ticksOf sums the cpu line; guest time (after steal) is already counted
// in user and nice.
func ticksOf(v [8]uint64) cpuTicks {
	var t cpuTicks
	for _, x := range v {
		t.total += x
	}
	t.steal = v[7]
	return t
}

// readStatCPU reads the machine-wide cpu line of /proc/stat (the first).
func readStatCPU() ([8]uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [8]uint64{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseStatCPU(line)
}

// parseStatCPU parses "cpu user nice system idle iowait irq softirq steal
// [guest guest_nice]" into its first eight counters (USER_HZ ticks).
func parseStatCPU(line string) ([8]uint64, error) {
	var v [8]uint64
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return v, fmt.Errorf("/proc/stat: first line %q is not the cpu line", line)
	}
	for i, f := range fields[1:9] {
		x, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return v, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
		}
		v[i] = x
	}
	return v, nil
}

// stealRatio is the share of all CPU time between two readings that the
// hypervisor stole; 0 when no time passed.
func (t cpuTicks) stealRatio(before cpuTicks) float64 {
	total := t.total - before.total
	if total == 0 {
		return 0
	}
	return float64(t.steal-before.steal) / float64(total)
}

// since is the kernel time spent between two readings.
func (k kernelCPU) since(before kernelCPU) time.Duration {
	ticks := (k.system - before.system) + (k.irq - before.irq) + (k.softirq - before.softirq)
	return time.Duration(ticks) * time.Second / userHZ
}

// Env is the machine a run was made on: what a figure needs beside it to
// mean anything, and what tells two runs apart.
type Env struct {
	Kernel    string `json:"kernel"`
	GoVersion string `json:"goVersion"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpuModel,omitempty"`
	MemTotal  uint64 `json:"memTotalBytes"`
	// Governor is cpu0's cpufreq scaling governor, or "unavailable" when
	// the machine does not expose one (as in most VMs).
	Governor string `json:"governor"`
	// LoadAvgStart and LoadAvgEnd are /proc/loadavg's 1, 5 and 15 minute
	// averages when the run started and ended: background load.
	LoadAvgStart [3]float64 `json:"loadAvgStart"`
	LoadAvgEnd   [3]float64 `json:"loadAvgEnd"`
	// Emulated is true inside proxyrig's VM (PROXYRIG_EMULATED=1): its
	// timings are emulated and never to be set beside native ones.
	Emulated bool `json:"emulated"`
}

// readEnv describes this machine now.
func readEnv() Env {
	e := Env{GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Governor: "unavailable"}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		e.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"); err == nil {
		e.Governor = strings.TrimSpace(string(b))
	}
	e.LoadAvgStart = readLoadAvg()
	e.Emulated = os.Getenv("PROXYRIG_EMULATED") == "1"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		e.MemTotal = uint64(si.Totalram) * uint64(si.Unit)
	}
	return e
}

func readLoadAvg() [3]float64 {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		out[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return out
}

// maxRSS is the peak resident set of this process, in bytes.
func maxRSS() uint64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return uint64(ru.Maxrss) * 1024
}

func goarch() string { return runtime.GOARCH }
