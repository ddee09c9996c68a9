#!/usr/bin/env python3
"""TCP bridges between the machine's network and the real test node's network namespace.

The real node (containerd, kubelet, kube-proxy, kube-router and its pods) lives in a
network namespace of its own, so that its bridge, routes, iptables rules and ipsets never
touch the machine's. The control plane listens on the machine's loopback only. This one
process joins the two without a veth, a route or a NAT rule:

  --forward PORT     inside the node namespace, listen on 0.0.0.0:PORT and connect each
                     client to 127.0.0.1:PORT on the machine (the API server, for the
                     kubelet, kube-proxy, kube-router and pods);
  --connect SOCKET   on the machine, an HTTP CONNECT proxy on a Unix socket that opens
                     each requested host:port from inside the node namespace (the API
                     server's egress selector: its connections to the kubelet and pods).

    netns-proxy.py --netns /var/run/netns/NAME [--forward PORT]... [--connect SOCKET]
"""
import argparse
import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def splice(a, b):
    threading.Thread(target=pump, args=(a, b), daemon=True).start()
    threading.Thread(target=pump, args=(b, a), daemon=True).start()


def in_netns(fd, host_fd, fn):
    """Runs fn with this thread in netns fd; sockets made there stay there."""
    setns(fd)
    try:
        return fn()
    finally:
        setns(host_fd)


def forward_loop(listener, port, lock):
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        splice(client, upstream)


def connect_loop(listener, node_fd, host_fd, lock):
    while True:
        client, _ = listener.accept()
        threading.Thread(
            target=handle_connect, args=(client, node_fd, host_fd, lock), daemon=True
        ).start()


def handle_connect(client, node_fd, host_fd, lock):
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
            if len(head) > 16384:
                client.close()
                return
        request, rest = head.split(b"\r\n\r\n", 1)
        method, target = request.split(b"\r\n", 1)[0].split(b" ")[:2]
        if method != b"CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            client.close()
            return
        host, port = target.decode().rsplit(":", 1)
        host = host.strip("[]")
        # setns is per thread, but keep socket creation serialized for clarity.
        with lock:
            upstream = in_netns(
                node_fd,
                host_fd,
                lambda: socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET),
            )
        upstream.settimeout(10)
        upstream.connect((host, int(port)))
        upstream.settimeout(None)
    except (OSError, ValueError) as e:
        try:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n" + str(e).encode())
        except OSError:
            pass
        client.close()
        return
    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    if rest:
        upstream.sendall(rest)
    splice(client, upstream)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--netns", required=True)
    ap.add_argument("--forward", type=int, action="append", default=[])
    ap.add_argument("--connect")
    args = ap.parse_args()

    host_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    node_fd = os.open(args.netns, os.O_RDONLY)
    lock = threading.Lock()
    threads = []
    for port in args.forward:

        def listen(port=port):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(128)
            return s

        listener = in_netns(node_fd, host_fd, listen)
        threads.append(threading.Thread(target=forward_loop, args=(listener, port, lock)))
    if args.connect:
        try:
            os.unlink(args.connect)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX)
        s.bind(args.connect)
        s.listen(128)
        threads.append(threading.Thread(target=connect_loop, args=(s, node_fd, host_fd, lock)))
    for t in threads:
        t.daemon = True
        t.start()
    print("netns-proxy: ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
