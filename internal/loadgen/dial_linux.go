package loadgen

import "syscall"

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (since 4.2;
// golang.org/x/sys/unix.IP_BIND_ADDRESS_NO_PORT).
const ipBindAddressNoPort = 0x18

// bindNoPort is a net.Dialer Control function for a dial from a fixed
// source address (OpenOptions.LocalAddr): it lets the kernel pick the
// source port at connect, per destination, instead of at bind. A bind to
// port 0 picks a port unused by any socket of that address, scanning the
// ephemeral range (and odd ports first: the half that bind prefers, about
// 14,000 of them by default); once those are taken every further bind
// scans the whole range under its locks, and connecting slows from
// thousands of sockets a second to tens. With the option a source address
// holds a full range of ports per destination.
func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
