package server

import (
	"net"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
		check   func(t *testing.T, r *resolved)
	}{
		{
			name: "defaults",
			cfg:  Config{AdvertiseAddress: "192.0.2.10"},
			check: func(t *testing.T, r *resolved) {
				if r.DataDir != DefaultDataDir || r.SecurePort != 6443 || r.BindAddress != "0.0.0.0" {
					t.Errorf("defaults: %+v", r.Config)
				}
				if r.dnsIP.String() != "10.96.0.10" {
					t.Errorf("cluster DNS IP %v, want 10.96.0.10", r.dnsIP)
				}
				if r.serviceIP.String() != "10.96.0.1" || r.serviceCIDR.String() != "10.96.0.0/12" {
					t.Errorf("service IP %v in %v", r.serviceIP, r.serviceCIDR)
				}
				if r.nodePortRange.Base != 30000 || r.nodePortRange.Size != 2768 {
					t.Errorf("node port range %v", r.nodePortRange)
				}
				if r.loopbackHost() != "127.0.0.1" {
					t.Errorf("loopback host %s", r.loopbackHost())
				}
				if r.Version != DefaultVersion {
					t.Errorf("version %s", r.Version)
				}
			},
		},
		{
			name: "custom ranges",
			cfg: Config{AdvertiseAddress: "192.0.2.10", ServiceClusterIPRange: "172.20.0.0/16",
				ServiceNodePortRange: "31000-31099", BindAddress: "192.0.2.10"},
			check: func(t *testing.T, r *resolved) {
				if r.serviceIP.String() != "172.20.0.1" {
					t.Errorf("service IP %v", r.serviceIP)
				}
				if r.nodePortRange.Base != 31000 || r.nodePortRange.Size != 100 {
					t.Errorf("node port range %v", r.nodePortRange)
				}
				if r.loopbackHost() != "192.0.2.10" {
					t.Errorf("a server bound to one IP is dialled at it, got %s", r.loopbackHost())
				}
			},
		},
		{
			name: "IPv6 service range",
			cfg:  Config{AdvertiseAddress: "2001:db8::10", ServiceClusterIPRange: "fd00:10:96::/112", BindAddress: "::"},
			check: func(t *testing.T, r *resolved) {
				if r.serviceIP.String() != "fd00:10:96::1" {
					t.Errorf("service IP %v", r.serviceIP)
				}
				if r.loopbackHost() != "::1" {
					t.Errorf("loopback host %s", r.loopbackHost())
				}
			},
		},
		{
			name: "loopback bind advertises a host address",
			cfg:  Config{BindAddress: "127.0.0.1"},
			check: func(t *testing.T, r *resolved) {
				if !usableEndpointIP(r.advertiseIP) {
					t.Errorf("advertise %v is not usable as an endpoint", r.advertiseIP)
				}
			},
		},
		{name: "bad bind", cfg: Config{BindAddress: "localhost"}, wantErr: "--bind-address"},
		{name: "bad CIDR", cfg: Config{AdvertiseAddress: "192.0.2.10", ServiceClusterIPRange: "10.96.0.0"}, wantErr: "--service-cluster-ip-range"},
		{name: "tiny CIDR", cfg: Config{AdvertiseAddress: "192.0.2.10", ServiceClusterIPRange: "10.96.0.0/32"}, wantErr: "no usable address"},
		{name: "bad port range", cfg: Config{AdvertiseAddress: "192.0.2.10", ServiceNodePortRange: "32767-30000"}, wantErr: "--service-node-port-range"},
		{name: "bad port", cfg: Config{AdvertiseAddress: "192.0.2.10", SecurePort: 70000}, wantErr: "--secure-port"},
		{name: "loopback advertise", cfg: Config{AdvertiseAddress: "127.0.0.1"}, wantErr: "--advertise-address"},
		{name: "advertise not an IP", cfg: Config{AdvertiseAddress: "host.example"}, wantErr: "--advertise-address"},
		{name: "cert without key", cfg: Config{AdvertiseAddress: "192.0.2.10", EtcdCertFile: "/x"}, wantErr: "--etcd-keyfile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.cfg.resolve()
			if err != nil && tt.cfg.AdvertiseAddress == "" && strings.Contains(err.Error(), "set --advertise-address") {
				t.Skip("this host has no non-loopback address to advertise")
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, r)
		})
	}
}

func TestUsableEndpointIP(t *testing.T) {
	tests := []struct {
		ip   string
		want bool
	}{
		{"192.0.2.1", true},
		{"10.0.0.1", true},
		{"2001:db8::1", true},
		{"127.0.0.1", false},
		{"::1", false},
		{"0.0.0.0", false},
		{"169.254.1.1", false},
		{"fe80::1", false},
		{"224.0.0.1", false},
	}
	for _, tt := range tests {
		if got := usableEndpointIP(net.ParseIP(tt.ip)); got != tt.want {
			t.Errorf("usableEndpointIP(%s) = %v, want %v", tt.ip, got, tt.want)
		}
	}
}
