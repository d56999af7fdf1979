package vm

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// initramfsFormat changes whenever the layout of the image changes in a way
// its content hash would not notice (none today: the hash covers every
// byte). Kept in the file name for people reading the cache directory.
const initramfsFormat = "1"

// busyboxApplets are the commands /init uses; each is a symlink to busybox.
var busyboxApplets = []string{"sh", "mount", "insmod", "mkdir", "chmod", "cp", "sleep", "switch_root"}

// DefaultCacheDir is where initramfs images are kept between runs:
// /var/cache/proxyrig as root, the user cache directory otherwise.
func DefaultCacheDir() string {
	if os.Geteuid() == 0 {
		return "/var/cache/proxyrig"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "proxyrig")
	}
	return filepath.Join(os.TempDir(), "proxyrig-cache")
}

// buildInitramfs renders the uncompressed initramfs for kernel ver:
// busybox, its applet links, the boot modules and /init.
func buildInitramfs(ctx context.Context, ver string) ([]byte, error) {
	bb, err := findBusybox()
	if err != nil {
		return nil, err
	}
	bbData, err := os.ReadFile(bb)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	mods, err := resolveModules(ctx, ver, bootModules)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	for _, d := range []string{"bin", "dev", "proc", "sys", "lib", "lib/modules", "newroot"} {
		w.Dir(d, 0o755)
	}
	w.File("bin/busybox", 0o755, bbData)
	for _, a := range busyboxApplets {
		w.Symlink("bin/"+a, "busybox")
	}
	for _, m := range mods {
		data, err := readModule(ctx, m.Path)
		if err != nil {
			return nil, err
		}
		w.File("lib/modules/"+m.Name, 0o644, data)
	}
	w.File("init", 0o755, []byte(initScript(mods)))
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("build initramfs: %w", err)
	}
	return buf.Bytes(), nil
}

// readModule returns a module's ELF bytes, decompressing it if the
// distribution ships it compressed (Debian 13 uses .ko.xz): busybox's insmod
// and older kernels' finit_module take only plain ELF.
func readModule(ctx context.Context, path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress module %s: %w", path, err)
		}
		data, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("decompress module %s: %w", path, err)
		}
		return data, nil
	case strings.HasSuffix(path, ".ko.xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".ko.zst"):
		tool = "zstd"
	default:
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		return data, nil
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-dc", path)
	cmd.Stderr = &stderr
	data, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decompress module: %s -dc %s: %w: %s", tool, path, err, strings.TrimSpace(stderr.String()))
	}
	return data, nil
}

// ensureInitramfs returns the path of a gzip-compressed initramfs for
// kernel ver, building it only when the cache lacks one with the same
// content. The cache is content-addressed: rendering the archive costs tens
// of milliseconds (busybox, a dozen modules), and keying on its hash means
// a new busybox, a kernel update or a changed /init can never boot a stale
// image.
func ensureInitramfs(ctx context.Context, ver, cacheDir string, log *slog.Logger) (string, error) {
	start := time.Now()
	raw, err := buildInitramfs(ctx, ver)
	if err != nil {
		return "", fmt.Errorf("build initramfs for %s: %w", ver, err)
	}
	sum := sha256.Sum256(raw)
	prefix := "prx-vm-initramfs-" + ver + "-"
	name := prefix + "v" + initramfsFormat + "-" + hex.EncodeToString(sum[:8]) + ".cpio.gz"
	path := filepath.Join(cacheDir, name)
	if _, err := os.Stat(path); err == nil {
		log.Debug("vm initramfs cached", "path", path)
		return path, nil
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(raw) // writes to a bytes.Buffer cannot fail
	zw.Close()
	if err := writeCacheFile(cacheDir, path, gz.Bytes()); err != nil {
		return "", err
	}
	pruneCache(cacheDir, prefix+"*.cpio.gz", path)
	log.Debug("vm initramfs built", "path", path, "bytes", len(raw), "took", time.Since(start))
	return path, nil
}

// staleAfter is how long an unused cache file of a superseded version is
// kept. Not removed at once: another proxyrig build may be booting it right
// now (two checkouts on one machine render different /init scripts).
const staleAfter = 24 * time.Hour

// pruneCache removes files matching pattern in dir, except keep, that have
// not been written for staleAfter.
func pruneCache(dir, pattern, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, o := range old {
		if st, err := os.Stat(o); err == nil && o != keep && time.Since(st.ModTime()) > staleAfter {
			os.Remove(o)
		}
	}
}
