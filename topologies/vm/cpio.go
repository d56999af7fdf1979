package vm

import (
	"fmt"
	"io"
	"strings"
)

// cpioWriter writes the "newc" (SVR4, no CRC) cpio format, the only one the
// kernel's initramfs unpacker reads (Documentation/driver-api/early-userspace/
// buffer-format.rst). archive/tar cannot stand in for it.
//
// Each entry is a 110-byte ASCII header — the magic "070701" then thirteen
// 8-digit hex fields — followed by the NUL-terminated name padded to a
// multiple of 4 bytes (counting from the header's start), then the data,
// padded to a multiple of 4. The archive ends with an entry named
// "TRAILER!!!".
//
// Every entry gets mtime 0 and uid/gid 0, so the same inputs always give the
// same bytes: the initramfs cache is keyed on a hash of them.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	// err is the first error; later calls do nothing and Close returns it,
	// so a builder can add entries unchecked and check once.
	err    error
	closed bool
}

// newc mode bits (the st_mode of stat(2)).
const (
	cpioModeDir     = 0o040000
	cpioModeFile    = 0o100000
	cpioModeSymlink = 0o120000
	cpioTrailer     = "TRAILER!!!"
	cpioMagic       = "070701"
	cpioHeaderLen   = 110
)

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w} }

// Dir adds a directory. perm is the permission bits only (0o755).
func (c *cpioWriter) Dir(name string, perm uint32) error {
	return c.entry(name, cpioModeDir|perm&0o7777, 2, nil)
}

// File adds a regular file with the given permission bits.
func (c *cpioWriter) File(name string, perm uint32, data []byte) error {
	return c.entry(name, cpioModeFile|perm&0o7777, 1, data)
}

// Symlink adds a symbolic link; newc stores the target as the entry's data.
func (c *cpioWriter) Symlink(name, target string) error {
	return c.entry(name, cpioModeSymlink|0o777, 1, []byte(target))
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	if c.closed {
		return c.err
	}
	c.closed = true
	c.ino = 0 // the trailer conventionally has inode 0
	return c.writeEntry(cpioTrailer, 0, 1, nil)
}

func (c *cpioWriter) entry(name string, mode, nlink uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		c.err = fmt.Errorf("cpio: write %q after Close", name)
		return c.err
	}
	// The kernel unpacks names relative to the rootfs; a leading "/" or a
	// ".." would be meaningless or unsafe, so refuse them early.
	name = strings.TrimPrefix(name, "/")
	if name == "" || name == cpioTrailer || strings.Contains(name, "\x00") {
		c.err = fmt.Errorf("cpio: bad entry name %q", name)
		return c.err
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			c.err = fmt.Errorf("cpio: entry name %q escapes the archive", name)
			return c.err
		}
	}
	c.ino++
	return c.writeEntry(name, mode, nlink, data)
}

func (c *cpioWriter) writeEntry(name string, mode, nlink uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	if uint64(len(data)) > 0xffffffff {
		c.err = fmt.Errorf("cpio: %q is %d bytes, newc holds at most 4 GiB", name, len(data))
		return c.err
	}
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		cpioMagic,
		c.ino,       // c_ino
		mode,        // c_mode
		0,           // c_uid
		0,           // c_gid
		nlink,       // c_nlink
		0,           // c_mtime
		len(data),   // c_filesize
		0,           // c_devmajor
		0,           // c_devminor
		0,           // c_rdevmajor
		0,           // c_rdevminor
		len(name)+1, // c_namesize, counting the NUL
		0,           // c_check: always 0 in newc (070702 would carry a sum)
	)
	buf := make([]byte, 0, len(hdr)+len(name)+4+len(data)+3)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	if _, err := c.w.Write(buf); err != nil {
		c.err = fmt.Errorf("cpio: write %q: %w", name, err)
	}
	return c.err
}

// pad4 pads b with NULs to a multiple of 4 bytes. Every entry starts
// 4-aligned, so aligning the entry's own length aligns the stream.
func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
