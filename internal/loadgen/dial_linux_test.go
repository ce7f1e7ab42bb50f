package loadgen

import (
	"net"
	"syscall"
	"testing"
)

// TestBindNoPortSetsTheOption: a dial from a source address with
// bindNoPort leaves IP_BIND_ADDRESS_NO_PORT set on the socket.
func TestBindNoPortSetsTheOption(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Control: bindNoPort}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v, serr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) {
		v, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if v != 1 {
		t.Fatalf("IP_BIND_ADDRESS_NO_PORT is %d", v)
	}
}
