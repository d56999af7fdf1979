package reports

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// chromiumPath is Debian's chromium package (ci/install-deps.sh installs
// it).
const chromiumPath = "/usr/bin/chromium"

// chromium runs headless Chromium on a local file with extra flags and
// returns its stdout and stderr. It never touches the network: QUIC,
// background networking, component updates and sync are off, and the
// page itself loads nothing. Each run gets a fresh profile directory (and
// HOME), so nothing leaks between runs or into the user's profile.
func chromium(t *testing.T, page string, flags ...string) (stdout, stderr string) {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile"),
		"--enable-logging=stderr", "--v=0",
	}, flags...)
	args = append(args, "file://"+page)
	// The timeout only guards against a hung browser; it asserts nothing
	// about speed.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	// Chromium forks helpers (zygote, GPU, renderer): give it a process
	// group of its own and end that group, and only it, when done.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // stragglers of our group; ESRCH when none
	}
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", chromiumPath, strings.Join(args, " "), err, tail(errb.String(), 3000))
	}
	return out.String(), errb.String()
}

// consoleMessages are the page's console messages in Chromium's log:
// lines like `[…:INFO:CONSOLE:12] "Uncaught …", source: file:///…`.
func consoleMessages(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, ":CONSOLE") {
			out = append(out, l)
		}
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// TestReportInChromium renders the fixture report in a real browser:
// the page logs nothing to the console, every chart is in the DOM with
// drawn content, and a screenshot comes out as a real, non-blank PNG.
func TestReportInChromium(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is missing (ci/install-deps.sh installs Debian's chromium): %v", chromiumPath, err)
		}
		t.Skipf("%s is not installed (apt-get install chromium)", chromiumPath)
	}
	dir := t.TempDir()

	// The console check is only worth something if it can see a message:
	// prove it on a page that logs one.
	probe := filepath.Join(dir, "probe.html")
	if err := os.WriteFile(probe, []byte(`<!DOCTYPE html><html><body><script>console.error("proxyrig-probe")</script></body></html>`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, probeLog := chromium(t, probe, "--dump-dom")
	if msgs := consoleMessages(probeLog); len(msgs) == 0 || !strings.Contains(strings.Join(msgs, "\n"), "proxyrig-probe") {
		t.Fatalf("cannot see console messages in this Chromium's log, so cannot check the report for them:\n%s", tail(probeLog, 2000))
	}

	in := fixtureInputs(t)
	report := filepath.Join(dir, "report.html")
	var b bytes.Buffer
	if err := Render(&b, in); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(report, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, c := range Charts(in.Evidence()) {
		want[chartAnchor(c.ID)] = true
	}
	for _, c := range in.History.TrendCharts(in.Evidence().Runs, in.Evidence().Datapaths()) {
		want[chartAnchor(c.ID)] = true
	}

	// The DOM as Chromium built it.
	dom, domLog := chromium(t, report, "--dump-dom")
	if msgs := consoleMessages(domLog); len(msgs) > 0 {
		t.Errorf("the report logged to the console:\n%s", strings.Join(msgs, "\n"))
	}
	doc, err := html.Parse(strings.NewReader(dom))
	if err != nil {
		t.Fatalf("parse Chromium's DOM: %v", err)
	}
	seen := map[string]bool{}
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode || n.Data != "figure" {
			return
		}
		id, _ := attr(n, "id")
		var svg *html.Node
		walk(n, func(c *html.Node) {
			if c.Type == html.ElementNode && c.Data == "svg" && svg == nil {
				svg = c
			}
		})
		if svg == nil {
			t.Errorf("figure %s has no <svg> in the browser's DOM", id)
			return
		}
		paths, texts := 0, 0
		walk(svg, func(c *html.Node) {
			if c.Type != html.ElementNode {
				return
			}
			switch c.Data {
			case "path":
				if d, _ := attr(c, "d"); len(d) > 3 {
					paths++
				}
			case "text":
				texts++
			}
		})
		// A frame, axes, ticks and a line make dozens of paths; labels,
		// tick values and the legend make texts.
		if paths < 10 || texts < 5 {
			t.Errorf("chart %s is nearly empty in the browser: %d paths, %d texts", id, paths, texts)
		}
		seen[id] = true
	})
	for id := range want {
		if !seen[id] {
			t.Errorf("chart %s is missing from the browser's DOM", id)
		}
	}

	// The screenshot.
	shot := filepath.Join(dir, "report.png")
	_, shotLog := chromium(t, report, "--screenshot="+shot, "--window-size=1280,4000")
	if msgs := consoleMessages(shotLog); len(msgs) > 0 {
		t.Errorf("the report logged to the console:\n%s", strings.Join(msgs, "\n"))
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if bnd := img.Bounds(); bnd.Dx() != 1280 || bnd.Dy() != 4000 {
		t.Errorf("screenshot is %v, want 1280×4000", bnd)
	}
	if blank(img) {
		t.Error("screenshot is blank")
	}
	if dst := os.Getenv("PROXYRIG_SCREENSHOT"); dst != "" {
		// Keep the screenshot, e.g. for the README.
		data, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(dst, data, 0o644)
		}
		if err != nil {
			t.Errorf("keep the screenshot in %s: %v", dst, err)
		}
	}
}

// blank reports whether an image is a single colour.
func blank(img image.Image) bool {
	b := img.Bounds()
	r0, g0, b0, _ := img.At(b.Min.X, b.Min.Y).RGBA()
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bb, _ := img.At(x, y).RGBA()
			if r != r0 || g != g0 || bb != b0 {
				return false
			}
		}
	}
	return true
}
