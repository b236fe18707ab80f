// A stand-in for System.Runtime.Loader (version 4.0.2.0), which .NET Core has and Mono lacks,
// so that Roslyn's csc.dll from the .NET Core 2.2 SDK starts on Mono (interop/run.sh). csc
// touches AssemblyLoadContext only to set up analyzer loading and profile optimisation;
// the interop build loads no analyzers. Our code.
using System;
using System.Reflection;

[assembly: AssemblyVersion("4.0.2.0")]

namespace System.Runtime.Loader
{
    public abstract class AssemblyLoadContext
    {
        static readonly AssemblyLoadContext DefaultContext = new Fallback();

        protected AssemblyLoadContext() {}

        protected abstract Assembly Load(AssemblyName name);

        public static AssemblyLoadContext Default { get { return DefaultContext; } }

        public static AssemblyLoadContext GetLoadContext(Assembly assembly) { return DefaultContext; }

        public Assembly LoadFromAssemblyPath(string path) { return Assembly.LoadFrom(path); }

        public void SetProfileOptimizationRoot(string directory) {}

        public void StartProfileOptimization(string profile) {}

#pragma warning disable 67 // never raised: Mono resolves assemblies itself
        public event Func<AssemblyLoadContext, AssemblyName, Assembly> Resolving;
#pragma warning restore 67

        sealed class Fallback : AssemblyLoadContext
        {
            protected override Assembly Load(AssemblyName name) { return null; }
        }
    }
}
