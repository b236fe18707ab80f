// A kcp2k echo client for kcpnet's interop test (interop/run.sh): the real kcp2k KcpClient,
// checking every echo like kcpnet's examples/echo_client.rs and with the same message plan.
// Once connected it sends reliable messages of 1, 100, 1200, 5000 bytes and the largest
// reliable size, unreliable messages of 1, 100 bytes and the largest unreliable size, then
// N reliable messages of random sizes in 1..=8000. Every message starts with its sequence
// number (u64 LE; shorter messages carry its low bytes), followed by bytes derived from it.
// At most 64 reliable messages are in flight. Reliable echoes must come back byte-identical
// and in order; lost unreliable echoes are counted, not failures. Then it disconnects, or
// with --kick sends the reliable message KICK and expects the server to disconnect it.
// Exit code 0: pass; 1: failure (message on stderr); 2: bad command line.
// Our code; it only uses kcp2k's public API.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Text;
using System.Threading;
using kcp2k;

namespace KcpnetInterop
{
    static class EchoClient
    {
        const string Usage =
            "KcpEchoClient.exe --port PORT [--host HOST] [--preset kcp2k|mirror] [--count N] [--seed S]\n" +
            "                  [--timeout-secs S] [--kick] [--settle-ms MS]\n" +
            "  --host HOST        server address [default: 127.0.0.1]\n" +
            "  --port PORT        server UDP port (required)\n" +
            "  --preset NAME      kcp2k: KcpConfig defaults (default); mirror: Mirror's KcpTransport\n" +
            "  --count N          random-size reliable messages after the fixed ones [default: 1000]\n" +
            "  --seed S           seed of the size generator [default: 1]\n" +
            "  --timeout-secs S   fail if the whole run takes longer [default: 60]\n" +
            "  --kick             end with the reliable message KICK and expect to be disconnected\n" +
            "  --settle-ms MS     wait MS ms after connecting before sending [default: 0: send in the\n" +
            "                     tick that reported the connection, before kcp2k flushed its ACK]";

        const int MaxInFlight = 64;
        const int MaxRandomSize = 8000;

        // SplitMix64, as in examples/echo_client.rs.
        sealed class SplitMix64
        {
            ulong s;
            public SplitMix64(ulong seed) { s = seed; }
            public ulong Next()
            {
                unchecked
                {
                    s += 0x9E3779B97F4A7C15UL;
                    ulong z = s;
                    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
                    z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
                    return z ^ (z >> 31);
                }
            }
        }

        static byte[] Message(ulong seq, int len)
        {
            var m = new List<byte>(len + 8);
            m.AddRange(BitConverter.GetBytes(seq)); // little-endian on every platform Mono runs here
            var g = new SplitMix64(seq ^ 0xA0761D6478BD642FUL);
            while (m.Count < len) m.AddRange(BitConverter.GetBytes(g.Next()));
            return m.Take(len).ToArray();
        }

        // kcp2k's Ping/Pong RTT (rttInMilliseconds, since the "rtt" change after V1.41), read by
        // reflection so that this program also builds against V1.41 and older.
        static string Rtt(KcpClient client)
        {
            var p = typeof(KcpPeer).GetProperty("rttInMilliseconds");
            return p == null ? "n/a (this kcp2k has no rttInMilliseconds)" : p.GetValue(client, null) + " ms";
        }

        static int Main(string[] args)
        {
            var a = Cli.Parse(args, new[] { "kick" }, Usage);
            string host;
            if (!a.TryGetValue("host", out host)) host = "127.0.0.1";
            int port = Cli.Int(a, "port", -1, Usage);
            if (port <= 0 || port > 65535) Cli.Fail(Usage, "--port is required (1..65535)");
            string presetName;
            if (!a.TryGetValue("preset", out presetName)) presetName = "kcp2k";
            KcpConfig config = Cli.Preset(presetName, Usage);
            int count = Cli.Int(a, "count", 1000, Usage);
            ulong seed = (ulong)Cli.Int(a, "seed", 1, Usage);
            int timeoutSecs = Cli.Int(a, "timeout-secs", 60, Usage);
            bool kick = a.ContainsKey("kick");
            int settleMs = Cli.Int(a, "settle-ms", 0, Usage);

            Log.Info = s => Console.WriteLine("kcp2k: " + s);
            Log.Warning = s => Console.WriteLine("kcp2k warning: " + s);
            Log.Error = s => Console.WriteLine("kcp2k error: " + s);

            int rmax = KcpPeer.ReliableMaxMessageSize(config.Mtu, config.ReceiveWindowSize);
            int umax = KcpPeer.UnreliableMaxMessageSize(config.Mtu);
            var fixedReliable = new Queue<int>(new[] { 1, 100, 1200, 5000, rmax }.Where(s => s >= 1 && s <= rmax).Distinct());
            var fixedUnreliable = new[] { 1, 100, umax }.Where(s => s >= 1 && s <= umax).Distinct().ToArray();
            int randomMax = Math.Min(MaxRandomSize, rmax);
            var sizes = new SplitMix64(seed);

            bool connected = false, disconnected = false;
            string failure = null;
            var errors = new List<string>();
            var inFlight = new Queue<KeyValuePair<ulong, byte[]>>();
            var unreliablePending = new List<byte[]>();
            int unreliableEchoed = 0;
            long reliableSent = 0, reliableEchoed = 0, reliableBytes = 0;
            ulong nextSeq = 0;
            int randomLeft = count;
            bool unreliableSent = false;

            KcpClient client = null;
            client = new KcpClient(
                () => { connected = true; },
                (data, channel) =>
                {
                    if (failure != null) return;
                    byte[] got = new byte[data.Count];
                    Buffer.BlockCopy(data.Array, data.Offset, got, 0, data.Count);
                    if (channel == KcpChannel.Reliable)
                    {
                        if (inFlight.Count == 0)
                        {
                            failure = "unexpected reliable message of " + got.Length + " bytes: all were echoed already";
                            return;
                        }
                        var expected = inFlight.Dequeue();
                        if (!got.SequenceEqual(expected.Value))
                        {
                            failure = string.Format("reliable echo mismatch: expected message {0} ({1} bytes), got {2} bytes",
                                                    expected.Key, expected.Value.Length, got.Length);
                            return;
                        }
                        reliableEchoed++;
                        reliableBytes += got.Length;
                    }
                    else
                    {
                        int i = unreliablePending.FindIndex(m => m.SequenceEqual(got));
                        if (i < 0)
                        {
                            failure = "unreliable echo of " + got.Length + " bytes matches no unreliable message sent";
                            return;
                        }
                        unreliablePending.RemoveAt(i);
                        unreliableEchoed++;
                    }
                },
                () => { disconnected = true; },
                (error, reason) =>
                {
                    errors.Add(error + ": " + reason);
                    Console.Error.WriteLine("error {0}: {1}", error, reason);
                },
                config);

            Console.WriteLine("kcp2k client connecting to {0}:{1} ({2})", host, port, Cli.Describe(config));
            var watch = Stopwatch.StartNew();
            client.Connect(host, (ushort)port);

            // phases: 0 connecting, 1 running, 2 grace for unreliable echoes, 3 kicked / disconnecting
            int phase = 0;
            double graceStart = 0, endStart = 0, connectMs = 0, echoMs = 0;
            while (true)
            {
                client.TickIncoming();
                double now = watch.Elapsed.TotalMilliseconds;
                if (failure != null) break;
                if (phase == 0 && connected)
                {
                    phase = 1;
                    connectMs = now;
                    Console.WriteLine("connected in {0:F1} ms; reliable sizes [{1}], then {2} reliable messages of 1..={3} random bytes; unreliable sizes [{4}]",
                                      now, string.Join(", ", fixedReliable), count, randomMax, string.Join(", ", fixedUnreliable));
                }
                if (phase < 3 && disconnected)
                {
                    failure = phase == 0 ? "could not connect (disconnected)"
                                         : string.Format("unexpected disconnect after {0} of {1} reliable echoes", reliableEchoed, reliableSent);
                    break;
                }
                if (phase < 3 && now > timeoutSecs * 1000.0)
                {
                    failure = string.Format("timed out after {0} s ({1} of {2} reliable echoes, connected: {3})",
                                            timeoutSecs, reliableEchoed, reliableSent, connected);
                    break;
                }
                if (phase == 1 && now - connectMs >= settleMs)
                {
                    while (true)
                    {
                        if (fixedReliable.Count > 0 || (unreliableSent && randomLeft > 0))
                        {
                            if (inFlight.Count >= MaxInFlight) break;
                            int len;
                            if (fixedReliable.Count > 0) len = fixedReliable.Dequeue();
                            else { randomLeft--; len = 1 + (int)(sizes.Next() % (ulong)randomMax); }
                            ulong seq = nextSeq++;
                            byte[] m = Message(seq, len);
                            if (m.Length == 4 && Encoding.ASCII.GetString(m) == "KICK") m = m.Concat(new byte[] { 0 }).ToArray();
                            client.Send(new ArraySegment<byte>(m), KcpChannel.Reliable);
                            reliableSent++;
                            inFlight.Enqueue(new KeyValuePair<ulong, byte[]>(seq, m));
                        }
                        else if (!unreliableSent)
                        {
                            unreliableSent = true;
                            foreach (int len in fixedUnreliable)
                            {
                                byte[] m = Message(nextSeq++, len);
                                client.Send(new ArraySegment<byte>(m), KcpChannel.Unreliable);
                                unreliablePending.Add(m);
                            }
                        }
                        else break;
                    }
                    if (fixedReliable.Count == 0 && unreliableSent && randomLeft == 0 && inFlight.Count == 0)
                    {
                        phase = 2;
                        graceStart = now;
                        echoMs = now - connectMs;
                    }
                }
                if (phase == 2 && (unreliablePending.Count == 0 || now - graceStart >= 500))
                {
                    phase = 3;
                    endStart = now;
                    if (kick)
                    {
                        client.Send(new ArraySegment<byte>(Encoding.ASCII.GetBytes("KICK")), KcpChannel.Reliable);
                    }
                    else
                    {
                        client.Disconnect(); // kcp2k: sends Disconnect, reports OnDisconnected at once
                    }
                }
                if (phase == 3)
                {
                    if (disconnected)
                    {
                        Console.WriteLine(kick ? "kicked by the server {0:F1} ms after KICK, as expected"
                                               : "disconnected ({0:F1} ms after Disconnect)", now - endStart);
                        break;
                    }
                    if (now - endStart > 5000)
                    {
                        failure = kick ? "the server did not disconnect us within 5 s of KICK"
                                       : "no OnDisconnected within 5 s of Disconnect";
                        break;
                    }
                }
                client.TickOutgoing();
                Thread.Sleep(1);
            }
            if (failure != null && client.connected) client.Disconnect();

            Console.WriteLine("summary:");
            Console.WriteLine("  reliable:    sent {0} messages, echoed {1} ({2} bytes)", reliableSent, reliableEchoed, reliableBytes);
            Console.WriteLine("  unreliable:  sent {0} messages, echoed {1}, lost {2}", fixedUnreliable.Length, unreliableEchoed, unreliablePending.Count);
            Console.WriteLine("  elapsed:     {0:F1} ms total (connect {1:F1} ms, echoes {2:F1} ms), rtt {3}",
                              watch.Elapsed.TotalMilliseconds, connectMs, echoMs, Rtt(client));
            Console.WriteLine("  errors:      {0}", errors.Count == 0 ? "none" : string.Join("; ", errors));
            if (failure != null)
            {
                Console.Error.WriteLine("KcpEchoClient: FAILED: " + failure);
                return 1;
            }
            Console.WriteLine("OK: all {0} reliable echoes byte-identical and in order", reliableEchoed);
            return 0;
        }
    }
}
