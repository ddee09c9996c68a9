// NeuralLog server STAND-IN, for tests on the real node only: it is not the NeuralLog
// server. It implements just the part of the server's contract that the operator relies
// on: listen on $PORT and answer GET / with 200 only while Redis at
// $REDIS_HOST:$REDIS_PORT answers PING (503 otherwise), so the rendered readiness and
// liveness probes mean "this pod reaches its Redis".
package main

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func pingRedis(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("unexpected reply %q", strings.TrimSpace(line))
	}
	return nil
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "3030"
	}
	redis := net.JoinHostPort(os.Getenv("REDIS_HOST"), os.Getenv("REDIS_PORT"))
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if err := pingRedis(redis); err != nil {
			http.Error(w, fmt.Sprintf("stand-in: redis %s: %v\n", redis, err), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "neurallog server stand-in: redis %s answers PING\n", redis)
	})
	log.Printf("neurallog server stand-in on :%s, redis %s", port, redis)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
