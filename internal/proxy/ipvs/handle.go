package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// Handle is the part of the IPVS netlink API the backend uses. The netlink
// implementation is *github.com/moby/ipvs.Handle (NewHandle); tests use
// FakeHandle.
type Handle interface {
	GetServices() ([]*libipvs.Service, error)
	// GetService returns the kernel's virtual server s (by family,
	// protocol, address and port); an error when there is none.
	GetService(s *libipvs.Service) (*libipvs.Service, error)
	NewService(s *libipvs.Service) error
	UpdateService(s *libipvs.Service) error
	DelService(s *libipvs.Service) error
	GetDestinations(s *libipvs.Service) ([]*libipvs.Destination, error)
	NewDestination(s *libipvs.Service, d *libipvs.Destination) error
	UpdateDestination(s *libipvs.Service, d *libipvs.Destination) error
	DelDestination(s *libipvs.Service, d *libipvs.Destination) error
	GetConfig() (*libipvs.Config, error)
	SetConfig(c *libipvs.Config) error
}

var _ Handle = (*libipvs.Handle)(nil)

// IPVS service flags (include/uapi/linux/ip_vs.h).
const (
	flagPersistent = 0x0001 // IP_VS_SVC_F_PERSISTENT
	flagHashed     = 0x0002 // IP_VS_SVC_F_HASHED, set by the kernel
)

// Protocol numbers and address families as IPVS takes them.
const (
	protoTCP  = unix.IPPROTO_TCP
	protoUDP  = unix.IPPROTO_UDP
	protoSCTP = unix.IPPROTO_SCTP
	afInet    = unix.AF_INET
	afInet6   = unix.AF_INET6
)

// ErrNoIPVS is wrapped by the errors of CheckKernel.
var ErrNoIPVS = errors.New("kernel lacks what the ipvs proxy mode needs")

// KernelPaths are where CheckKernel looks; tests point them at a fake tree.
type KernelPaths struct {
	// Proc is the procfs mount ("/proc").
	Proc string
	// Sys is the sysfs mount ("/sys").
	Sys string
	// Modprobe loads a module (nil: run "modprobe NAME" when it exists).
	Modprobe func(name string) error
}

// DefaultKernelPaths are the real ones.
func DefaultKernelPaths() KernelPaths { return KernelPaths{Proc: "/proc", Sys: "/sys"} }

// CheckKernel verifies that the kernel has IPVS and dummy interfaces,
// loading the modules when they are modules that are not loaded yet. The
// error names the missing module ("ip_vs" or "dummy") and wraps ErrNoIPVS.
func CheckKernel(p KernelPaths) error {
	if p.Modprobe == nil {
		p.Modprobe = modprobe
	}
	var errs []error
	have := func(paths ...string) bool {
		for _, f := range paths {
			if _, err := os.Stat(f); err == nil {
				return true
			}
		}
		return false
	}
	check := func(module, config string, present ...string) {
		if have(present...) {
			return
		}
		lerr := p.Modprobe(module)
		if lerr == nil && have(present...) {
			return
		}
		msg := fmt.Sprintf("module %s is not loaded and the kernel has no built-in %s", module, config)
		if lerr != nil {
			msg += fmt.Sprintf(" (modprobe %s: %v)", module, lerr)
		}
		errs = append(errs, fmt.Errorf("%w: %s", ErrNoIPVS, msg))
	}
	check("ip_vs", "CONFIG_IP_VS", filepath.Join(p.Proc, "net/ip_vs"), filepath.Join(p.Sys, "module/ip_vs"))
	// A dummy link can also exist already (kube-ipvs0 from a previous run).
	check("dummy", "CONFIG_DUMMY", filepath.Join(p.Sys, "module/dummy"), filepath.Join(p.Sys, "class/net", LinkName))
	return errors.Join(errs...)
}

func modprobe(name string) error {
	path, err := exec.LookPath("modprobe")
	if err != nil {
		return fmt.Errorf("no modprobe: %w", err)
	}
	out, err := exec.Command(path, name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewHandle checks the kernel (CheckKernel with the real paths) and opens
// an IPVS netlink handle in the current network namespace.
func NewHandle() (*libipvs.Handle, error) {
	if err := CheckKernel(DefaultKernelPaths()); err != nil {
		return nil, fmt.Errorf("ipvs: %w", err)
	}
	h, err := libipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("ipvs: open netlink handle: %w", err)
	}
	return h, nil
}

// vsKey identifies a virtual server.
type vsKey struct {
	af    uint16
	proto uint16
	addr  netip.Addr
	port  uint16
}

func keyOf(s *libipvs.Service) vsKey {
	a, _ := netip.AddrFromSlice(s.Address)
	return vsKey{af: s.AddressFamily, proto: s.Protocol, addr: a.Unmap(), port: s.Port}
}

func (k vsKey) String() string {
	return fmt.Sprintf("%s %s", protoName(k.proto), netip.AddrPortFrom(k.addr, k.port))
}

func protoName(p uint16) string {
	switch p {
	case protoTCP:
		return "TCP"
	case protoUDP:
		return "UDP"
	case protoSCTP:
		return "SCTP"
	}
	return fmt.Sprintf("proto-%d", p)
}

// service returns the libipvs.Service of k with no attributes.
func (k vsKey) service() *libipvs.Service {
	return &libipvs.Service{AddressFamily: k.af, Protocol: k.proto, Address: net.IP(k.addr.AsSlice()), Port: k.port}
}

func destKey(d *libipvs.Destination) netip.AddrPort {
	a, _ := netip.AddrFromSlice(d.Address)
	return netip.AddrPortFrom(a.Unmap(), d.Port)
}
