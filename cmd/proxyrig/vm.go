package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"proxyrig/topologies/vm"
)

// runVM is `proxyrig vm`: run a command inside the VM runner's guest, whose
// Debian kernel has what the host's lacks (IPVS, SCTP, dummy, netem).
func runVM(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("vm", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: proxyrig vm [flags] -- <command> [args...]\n       proxyrig vm --list-kernels\n\n"+
			"Boots an installed Debian kernel under qemu (emulated, no KVM) with the host's root\n"+
			"shared read-only, runs the command there and exits with its status. A command\n"+
			"starting with 'proxyrig' runs this same binary in the guest.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	kernel := fs.String("kernel", "", "kernel version to boot (default: newest installed that is not the host's)")
	memory := fs.Int("memory", vm.DefaultMemory, "guest memory in MiB")
	cpus := fs.Int("cpus", vm.DefaultCPUs, "guest vCPUs")
	timeout := fs.Duration("timeout", time.Hour, "give up (and kill the VM) after this long, boot included; 0 = never")
	dir := fs.String("dir", "", "working directory in the guest (default: the current one)")
	listKernels := fs.Bool("list-kernels", false, "list the kernels the VM can boot, newest first, and exit")
	verbose := fs.Bool("v", false, "log the guest console and the qemu command line to stderr")
	var modules stringList
	fs.Var(&modules, "module", "load this kernel module in the guest before the command (repeatable)")
	env := kvList{}
	fs.Var(env, "env", "set KEY=VALUE in the command's environment (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}

	if *listKernels {
		ks, err := vm.Kernels()
		if err != nil {
			return err
		}
		if len(ks) == 0 {
			return errors.New("no kernel the VM can boot (apt-get install linux-image-amd64)")
		}
		def, _ := vm.DefaultKernel()
		for _, k := range ks {
			if k == def {
				fmt.Println(k + " (default)")
			} else {
				fmt.Println(k)
			}
		}
		return nil
	}

	argv := fs.Args()
	if len(argv) == 0 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("vm: no command given (proxyrig vm [flags] -- <command> [args...])")}
	}
	if argv[0] == "proxyrig" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("vm: find this binary to run it in the guest: %w", err)
		}
		argv = append([]string{self}, argv[1:]...)
	}
	code, err := vm.Run(ctx, vm.Config{
		Kernel:  *kernel,
		Memory:  *memory,
		CPUs:    *cpus,
		Timeout: *timeout,
		Modules: modules,
		Env:     env,
		Dir:     *dir,
		Logger:  newLogger(*verbose),
	}, argv, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}
