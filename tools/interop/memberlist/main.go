// Command mlpeer runs one hashicorp/memberlist member for wanfed's interop
// tests. It reports what it sees as JSON lines on stdout and obeys one-word
// commands on stdin, so a test can drive it without parsing log text.
//
// Output lines: {"event":"ready",...}, {"event":"joined",...},
// {"event":"join"|"leave"|"update","name":...,"tags":{...}},
// {"event":"members","members":[...]}, {"event":"left"}.
// Commands: "members", "join NAME/ADDR[,NAME/ADDR...]", "leave".
//
// With -golden it instead prints one JSON object of hex strings: messages
// encoded by the same msgpack codec memberlist uses, from structs with
// memberlist's wire field names, for byte-for-byte comparison with Python.
package main

import (
	"bufio"
	"bytes"
	"compress/lzw"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/codec"
	"github.com/hashicorp/memberlist"
)

// Serf puts tags into node metadata as a marker byte and a msgpack map; the
// Python side uses the same layout, so tags are what both compare.
const tagMarker = 0xff

type printer struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (p *printer) emit(v map[string]interface{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v["t"] = float64(time.Now().UnixNano()) / 1e9
	_ = p.enc.Encode(v)
}

func encodeTags(spec string) []byte {
	tags := map[string]string{}
	for _, kv := range strings.Split(spec, ",") {
		if kv == "" {
			continue
		}
		parts := strings.SplitN(kv, "=", 2)
		if len(parts) == 2 {
			tags[parts[0]] = parts[1]
		}
	}
	var out []byte
	enc := codec.NewEncoderBytes(&out, &codec.MsgpackHandle{})
	if err := enc.Encode(tags); err != nil {
		panic(err)
	}
	return append([]byte{tagMarker}, out...)
}

func decodeTags(meta []byte) map[string]string {
	tags := map[string]string{}
	if len(meta) == 0 || meta[0] != tagMarker {
		return tags
	}
	dec := codec.NewDecoderBytes(meta[1:], &codec.MsgpackHandle{})
	if err := dec.Decode(&tags); err != nil {
		return map[string]string{"_error": err.Error()}
	}
	return tags
}

func describe(n *memberlist.Node) map[string]interface{} {
	return map[string]interface{}{
		"name": n.Name,
		"addr": n.Addr.String(),
		"port": n.Port,
		"tags": decodeTags(n.Meta),
		"vsn":  []uint8{n.PMin, n.PMax, n.PCur, n.DMin, n.DMax, n.DCur},
	}
}

type delegate struct{ meta []byte }

func (d *delegate) NodeMeta(limit int) []byte                  { return d.meta }
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

type events struct{ out *printer }

func (e *events) report(kind string, n *memberlist.Node) {
	v := describe(n)
	v["event"] = kind
	e.out.emit(v)
}

func (e *events) NotifyJoin(n *memberlist.Node)   { e.report("join", n) }
func (e *events) NotifyLeave(n *memberlist.Node)  { e.report("leave", n) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.report("update", n) }

// Wire shapes of memberlist's messages (field names and tags are the protocol).
type wirePing struct {
	SeqNo      uint32
	Node       string
	SourceAddr []byte `codec:",omitempty"`
	SourcePort uint16 `codec:",omitempty"`
	SourceNode string `codec:",omitempty"`
}

type wireIndirectPing struct {
	SeqNo      uint32
	Target     []byte
	Port       uint16
	Node       string
	Nack       bool
	SourceAddr []byte `codec:",omitempty"`
	SourcePort uint16 `codec:",omitempty"`
	SourceNode string `codec:",omitempty"`
}

type wireAck struct {
	SeqNo   uint32
	Payload []byte
}

type wireSuspect struct {
	Incarnation uint32
	Node        string
	From        string
}

type wireAlive struct {
	Incarnation uint32
	Node        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Vsn         []uint8
}

type wirePushPullHeader struct {
	Nodes        int
	UserStateLen int
	Join         bool
}

type wirePushNodeState struct {
	Name        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Incarnation uint32
	State       uint8
	Vsn         []uint8
}

func msgpackHex(v interface{}) string {
	var out []byte
	if err := codec.NewEncoderBytes(&out, &codec.MsgpackHandle{}).Encode(v); err != nil {
		panic(err)
	}
	return hex.EncodeToString(out)
}

func printGolden() {
	var lzwBuf bytes.Buffer
	w := lzw.NewWriter(&lzwBuf, lzw.LSB, 8)
	_, _ = w.Write(bytes.Repeat([]byte("wanfed gossip, wanfed gossip! "), 40))
	_ = w.Close()
	longName := strings.Repeat("n", 40)
	golden := map[string]string{
		"ping": msgpackHex(&wirePing{SeqNo: 7, Node: "go1.dc1"}),
		"ping_full": msgpackHex(&wirePing{SeqNo: 70000, Node: "go1.dc1",
			SourceAddr: []byte{127, 0, 0, 1}, SourcePort: 8302, SourceNode: "py1.dc2"}),
		"indirect_ping": msgpackHex(&wireIndirectPing{SeqNo: 300, Target: []byte{127, 0, 0, 2},
			Port: 8302, Node: "go2.dc1", Nack: true, SourceAddr: []byte{127, 0, 0, 1},
			SourcePort: 8302, SourceNode: "py1.dc1"}),
		"ack":     msgpackHex(&wireAck{SeqNo: 4294967295}),
		"suspect": msgpackHex(&wireSuspect{Incarnation: 3, Node: "go1.dc1", From: "py1.dc1"}),
		"alive": msgpackHex(&wireAlive{Incarnation: 128, Node: longName, Addr: []byte{127, 0, 0, 1},
			Port: 65535, Meta: encodeTags("dc=dc1,role=go"), Vsn: []uint8{1, 5, 2, 0, 0, 0}}),
		"push_pull_header": msgpackHex(&wirePushPullHeader{Nodes: 2, Join: true}),
		"push_node_state": msgpackHex(&wirePushNodeState{Name: "go1.dc1", Addr: []byte{127, 0, 0, 1},
			Port: 7946, Incarnation: 1, State: 3, Vsn: []uint8{1, 5, 2, 0, 0, 0}}),
		"lzw_plain":      hex.EncodeToString(bytes.Repeat([]byte("wanfed gossip, wanfed gossip! "), 40)),
		"lzw_compressed": hex.EncodeToString(lzwBuf.Bytes()),
	}
	_ = json.NewEncoder(os.Stdout).Encode(golden)
}

func main() {
	name := flag.String("name", "", "member name")
	bind := flag.String("bind", "127.0.0.1", "bind and advertise address")
	port := flag.Int("port", 0, "bind port (0 picks one)")
	join := flag.String("join", "", "comma-separated NAME/ADDR:PORT to join")
	tags := flag.String("tags", "", "comma-separated k=v tags")
	encrypt := flag.String("encrypt", "", "base64 gossip key")
	compress := flag.Bool("compress", true, "LZW-compress outgoing messages (memberlist's default)")
	probeInterval := flag.Duration("probe-interval", time.Second, "")
	probeTimeout := flag.Duration("probe-timeout", 500*time.Millisecond, "")
	suspicionMult := flag.Int("suspicion-mult", 4, "")
	gossipInterval := flag.Duration("gossip-interval", 200*time.Millisecond, "")
	gossipNodes := flag.Int("gossip-nodes", 3, "")
	pushPull := flag.Duration("push-pull-interval", 30*time.Second, "")
	deadTime := flag.Duration("gossip-to-the-dead", 30*time.Second, "")
	golden := flag.Bool("golden", false, "print reference encodings and exit")
	flag.Parse()
	if *golden {
		printGolden()
		return
	}

	out := &printer{enc: json.NewEncoder(os.Stdout)}
	conf := memberlist.DefaultLANConfig()
	conf.Name = *name
	conf.BindAddr = *bind
	conf.BindPort = *port
	conf.AdvertiseAddr = *bind
	conf.AdvertisePort = *port
	conf.RequireNodeNames = true
	conf.EnableCompression = *compress
	conf.ProbeInterval = *probeInterval
	conf.ProbeTimeout = *probeTimeout
	conf.SuspicionMult = *suspicionMult
	conf.GossipInterval = *gossipInterval
	conf.GossipNodes = *gossipNodes
	conf.PushPullInterval = *pushPull
	conf.GossipToTheDeadTime = *deadTime
	conf.LogOutput = os.Stderr
	conf.Delegate = &delegate{meta: encodeTags(*tags)}
	conf.Events = &events{out: out}
	if *encrypt != "" {
		key, err := base64.StdEncoding.DecodeString(*encrypt)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad -encrypt:", err)
			os.Exit(2)
		}
		conf.SecretKey = key
	}

	ml, err := memberlist.Create(conf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "create:", err)
		os.Exit(1)
	}
	out.emit(map[string]interface{}{"event": "ready", "name": *name, "port": conf.AdvertisePort})

	doJoin := func(spec string) {
		n, err := ml.Join(strings.Split(spec, ","))
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		out.emit(map[string]interface{}{"event": "joined", "count": n, "error": msg})
	}
	if *join != "" {
		doJoin(*join)
	}

	scanner := bufio.NewScanner(os.Stdin)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "members":
			var list []map[string]interface{}
			for _, n := range ml.Members() {
				list = append(list, describe(n))
			}
			out.emit(map[string]interface{}{"event": "members", "members": list})
		case "join":
			if len(fields) > 1 {
				doJoin(fields[1])
			}
		case "leave":
			err := ml.Leave(5 * time.Second)
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			_ = ml.Shutdown()
			out.emit(map[string]interface{}{"event": "left", "error": msg})
			return
		}
	}
	// stdin closed: the test is done with us.
	_ = ml.Shutdown()
}
