package main

import (
	"flag"
	"reflect"
	"testing"
)

// The guest must see the bench flags the user gave, repeatable --opt
// included, with its own output directory and the bundle flag.
func TestVMBenchArgvRoundTrips(t *testing.T) {
	newFS := func() (*flag.FlagSet, kvList, *string, *string) {
		fs := flag.NewFlagSet("bench", flag.ContinueOnError)
		opts := kvList{}
		fs.Var(opts, "opt", "")
		services := fs.String("services", "100", "")
		out := fs.String("out", "out/bench", "")
		fs.Bool("vm", false, "")
		fs.Bool("vm-bundle", false, "")
		return fs, opts, services, out
	}
	fs, _, _, _ := newFS()
	if err := fs.Parse([]string{"--vm", "--out", "/somewhere", "--services", "100,1000", "--opt", "scheduler=rr", "--opt", "strict-arp=true"}); err != nil {
		t.Fatal(err)
	}
	argv := vmBenchArgv(fs, "/bin/proxyrig")
	if argv[0] != "/bin/proxyrig" || argv[1] != "bench" {
		t.Fatalf("argv %q does not start with the binary and the bench command", argv)
	}

	guest, opts, services, out := newFS()
	if err := guest.Parse(argv[2:]); err != nil {
		t.Fatalf("the guest cannot parse %q: %v", argv, err)
	}
	if want := (kvList{"scheduler": "rr", "strict-arp": "true"}); !reflect.DeepEqual(opts, want) {
		t.Errorf("guest --opt = %v, want %v (argv %q)", opts, want, argv)
	}
	if *services != "100,1000" || *out != "/tmp/prx-bench-vm" {
		t.Errorf("guest --services %q --out %q (argv %q)", *services, *out, argv)
	}
	if guest.Lookup("vm").Value.String() != "false" || guest.Lookup("vm-bundle").Value.String() != "true" {
		t.Errorf("guest must not re-enter the VM and must bundle its results: %q", argv)
	}
}
