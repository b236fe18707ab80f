// A kcp2k echo server for kcpnet's interop test (interop/run.sh): the real kcp2k KcpServer,
// echoing like kcpnet's examples/echo_server.rs. Every message goes back to its sender on
// the channel it came in on, except the reliable message "KICK", which makes the server
// disconnect that client (kcp2k has no close reason: the client sees a plain Disconnect).
// Our code; it only uses kcp2k's public API.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using kcp2k;

namespace KcpnetInterop
{
    // KcpServer bound to the loopback address instead of the wildcard (the test must stay on
    // 127.0.0.1). Everything after the bind is kcp2k's own code; with DualMode the socket is
    // kcp2k's IPv6 dual-mode socket, bound to ::ffff:127.0.0.1.
    class LoopbackKcpServer : KcpServer
    {
        public LoopbackKcpServer(Action<int> onConnected, Action<int, ArraySegment<byte>, KcpChannel> onData,
                                 Action<int> onDisconnected, Action<int, ErrorCode, string> onError,
                                 KcpConfig config)
            : base(onConnected, onData, onDisconnected, onError, config) {}

        public override void Start(ushort port)
        {
            if (config.DualMode)
            {
                socket = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp);
                socket.DualMode = true;
                socket.Bind(new IPEndPoint(IPAddress.Parse("::ffff:127.0.0.1"), port));
            }
            else
            {
                socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                socket.Bind(new IPEndPoint(IPAddress.Loopback, port));
            }
            socket.Blocking = false;
            Common.ConfigureSocketBuffers(socket, config.RecvBufferSize, config.SendBufferSize);
        }
    }

    static class EchoServer
    {
        const string Usage =
            "KcpEchoServer.exe --port PORT [--preset kcp2k|mirror] [--clients N] [--max-seconds S]\n" +
            "  --port PORT        UDP port on 127.0.0.1 (required)\n" +
            "  --preset NAME      kcp2k: KcpConfig defaults (default); mirror: Mirror's KcpTransport\n" +
            "  --clients N        exit after N clients have disconnected [default: run until --max-seconds]\n" +
            "  --max-seconds S    exit after S seconds [default: 60]";

        static int Main(string[] args)
        {
            var a = Cli.Parse(args, new string[0], Usage);
            int port = Cli.Int(a, "port", -1, Usage);
            if (port <= 0 || port > 65535) Cli.Fail(Usage, "--port is required (1..65535)");
            string presetName;
            if (!a.TryGetValue("preset", out presetName)) presetName = "kcp2k";
            KcpConfig config = Cli.Preset(presetName, Usage);
            int clients = Cli.Int(a, "clients", -1, Usage);
            int maxSeconds = Cli.Int(a, "max-seconds", 60, Usage);

            Log.Info = s => Console.WriteLine("kcp2k: " + s);
            Log.Warning = s => Console.WriteLine("kcp2k warning: " + s);
            Log.Error = s => Console.WriteLine("kcp2k error: " + s);

            KcpServer server = null;
            var kicks = new List<int>();
            int disconnected = 0, connected = 0, errors = 0;
            long messages = 0, bytes = 0;
            server = new LoopbackKcpServer(
                id =>
                {
                    connected++;
                    Console.WriteLine("{0} connected from {1}", id, server.GetClientEndPoint(id));
                },
                (id, data, channel) =>
                {
                    messages++;
                    bytes += data.Count;
                    if (channel == KcpChannel.Reliable && data.Count == 4 &&
                        Encoding.ASCII.GetString(data.Array, data.Offset, data.Count) == "KICK")
                    {
                        Console.WriteLine("{0} kick requested: disconnecting", id);
                        kicks.Add(id); // disconnect after the tick, not inside kcp2k's receive loop
                        return;
                    }
                    server.Send(id, data, channel); // kcp2k copies the message
                },
                id =>
                {
                    disconnected++;
                    Console.WriteLine("{0} disconnected", id);
                },
                (id, error, reason) =>
                {
                    errors++;
                    Console.WriteLine("{0} error {1}: {2}", id, error, reason);
                },
                config);

            server.Start((ushort)port);
            Console.WriteLine("kcp2k server listening on {0} ({1})", server.LocalEndPoint, Cli.Describe(config));
            var watch = Stopwatch.StartNew();
            while (watch.Elapsed.TotalSeconds < maxSeconds && (clients < 0 || disconnected < clients))
            {
                server.TickIncoming();
                foreach (int id in kicks) server.Disconnect(id);
                kicks.Clear();
                server.TickOutgoing();
                Thread.Sleep(1);
            }
            bool done = clients < 0 || disconnected >= clients;
            Console.WriteLine("exiting after {0:F1} s: {1} connected, {2} disconnected, {3} errors, " +
                              "{4} messages / {5} bytes echoed or kicked{6}",
                              watch.Elapsed.TotalSeconds, connected, disconnected, errors, messages, bytes,
                              done ? "" : " (stopped by --max-seconds)");
            server.Stop();
            return done ? 0 : 1;
        }
    }
}
