package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// wanProxy is the WAN link between a plant and the cloud: a TCP proxy the
// test can cut (every connection dropped, new ones refused) and restore.
type wanProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newWANProxy(t *testing.T) *wanProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &wanProxy{ln: ln, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *wanProxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.cut || p.target == "" {
		p.mu.Unlock()
		c.Close()
		return
	}
	target := p.target
	p.mu.Unlock()
	u, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	p.conns[c], p.conns[u] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(u, c); u.Close(); c.Close() }()
	_, _ = io.Copy(c, u)
	u.Close()
	c.Close()
}

func (p *wanProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// TestReplicationWANCut: an edge Millstream replicates mqtt.ingress to a
// cloud Millstream (its Kafka endpoint) through a WAN link that is cut and
// restored several times during a steady MQTT stream. The cloud ends up
// with every selected message exactly once, in per-topic order; messages
// of denied topics never arrive.
func TestReplicationWANCut(t *testing.T) {
	proxy := newWANProxy(t)
	cloudDir := t.TempDir()
	cloudCfg := filepath.Join(cloudDir, "millstream.yaml")
	yaml := "data_dir: " + filepath.Join(cloudDir, "data") + "\nmqtt:\n  listeners:\n    - {name: tcp, type: tcp, address: \"127.0.0.1:0\"}\nhttp:\n  address: 127.0.0.1:0\nlogging:\n  format: json\n" +
		"kafka_endpoint:\n  enabled: true\n  address: 127.0.0.1:0\n  advertised_address: " + proxy.ln.Addr().String() + "\n"
	if err := os.WriteFile(cloudCfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cloud := startServer(t, cloudCfg)
	proxy.mu.Lock()
	proxy.target = cloud.kafka
	proxy.mu.Unlock()

	edge := startServer(t, writeConfig(t, t.TempDir(), `replicate:
  enabled: true
  site: plant1
  remote:
    brokers: [`+proxy.ln.Addr().String()+`]
  flows:
    - name: ingress
      topics: [mqtt.ingress]
      include: [line/#]
      deny: [line/secret/#]
      remote_topic: plant1.ingress
`))

	o := paho.NewClientOptions().AddBroker("tcp://127.0.0.1:" + edge.port()).SetClientID("wan-pub").SetMaxResumePubInFlight(64)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)

	const keys, perKey = 8, 300
	stream := make(chan struct{})
	go func() {
		defer close(stream)
		for i := 1; i <= perKey; i++ {
			var toks []paho.Token
			for k := range keys {
				toks = append(toks, c.Publish(fmt.Sprintf("line/m%d/count", k), 1, false, strconv.Itoa(i)))
			}
			if i%50 == 0 {
				toks = append(toks, c.Publish("line/secret/recipe", 1, false, strconv.Itoa(i)))
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
					t.Errorf("publish: %v", tok.Error())
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// The link goes down and comes back four times during the stream.
	for range 4 {
		time.Sleep(400 * time.Millisecond)
		proxy.setCut(true)
		time.Sleep(700 * time.Millisecond)
		proxy.setCut(false)
	}
	<-stream

	var recs []record
	deadline := time.Now().Add(60 * time.Second)
	for {
		recs = cloudRecords(t, cloud, "plant1.ingress")
		if len(recs) >= keys*perKey || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // duplicates would arrive after the last record
	recs = cloudRecords(t, cloud, "plant1.ingress")
	last := map[string]int{}
	count := 0
	for _, r := range recs {
		if strings.HasPrefix(r.key, "line/secret/") {
			t.Fatalf("a denied message reached the cloud: %s", r.key)
		}
		i, _ := strconv.Atoi(r.value)
		if i != last[r.key]+1 {
			t.Fatalf("%s: %d after %d (lost, duplicated or out of order)", r.key, i, last[r.key])
		}
		last[r.key] = i
		count++
	}
	if count != keys*perKey {
		t.Fatalf("the cloud has %d of %d messages", count, keys*perKey)
	}
	// The cuts did reach the replicator (it went through the proxy).
	var reconnects float64
	for _, l := range strings.Split(edge.metrics(t), "\n") {
		if strings.HasPrefix(l, "millstream_replicate_reconnects_total ") {
			reconnects, _ = strconv.ParseFloat(strings.TrimPrefix(l, "millstream_replicate_reconnects_total "), 64)
		}
	}
	if reconnects < 1 {
		t.Errorf("millstream_replicate_reconnects_total = %v: the link cuts were not seen", reconnects)
	}
}

type record struct{ key, value string }

// cloudRecords reads a topic of the cloud node through its replay API
// (merged in timestamp order, ties in partition order, so each key's
// records keep their order).
func cloudRecords(t *testing.T, s *server, topic string) []record {
	t.Helper()
	var out []record
	for _, r := range topicRecords(t, s, topic) {
		out = append(out, record{string(r.Key), string(r.Value)})
	}
	return out
}
