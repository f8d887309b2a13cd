// NOT Unity: the few UnityEngine types runtime/unity/LoreKit/Unity/*.cs use, with Unity's
// signatures, so that tests/test_clients_unity.py can type-check those two files with Mono's mcs
// (UnityEngine is not available on these machines). Compiling against this proves the C# is
// well-typed for these signatures; it does not prove the files work inside Unity.
using System;

namespace UnityEngine
{
    public class Object
    {
        public static void DontDestroyOnLoad(Object target) { }
    }

    public class Component : Object
    {
        public GameObject gameObject { get { return null; } }
    }

    public class Behaviour : Component { }

    public class MonoBehaviour : Behaviour { }

    public sealed class GameObject : Object
    {
        public SceneManagement.Scene scene { get { return default(SceneManagement.Scene); } }
    }

    public static class Debug
    {
        public static void Log(object message) { }
        public static void LogWarning(object message) { }
    }

    public static class Application
    {
        public static string productName { get { return ""; } }
    }

    public static class Input
    {
        public static bool GetKeyDown(KeyCode key) { return false; }
    }

    public enum KeyCode { Escape = 27, T = 116 }

    public static class PlayerPrefs
    {
        public static int GetInt(string key) { return 0; }
        public static void SetInt(string key, int value) { }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public class TooltipAttribute : Attribute
    {
        public TooltipAttribute(string tooltip) { }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class DisallowMultipleComponent : Attribute { }
}

namespace UnityEngine.SceneManagement
{
    public struct Scene
    {
        public string name { get { return ""; } }
    }
}

namespace UnityEngine.UI
{
    public class Text : Component
    {
        public string text { get; set; }
    }
}

namespace UnityEngine.Events
{
    public delegate void UnityAction();
    public delegate void UnityAction<T0>(T0 arg0);
    public delegate void UnityAction<T0, T1>(T0 arg0, T1 arg1);
    public delegate void UnityAction<T0, T1, T2>(T0 arg0, T1 arg1, T2 arg2);

    // Generic UnityEvents are abstract before Unity 2020.1: the client derives a class for each.
    public class UnityEvent
    {
        public void AddListener(UnityAction call) { }
        public void Invoke() { }
    }

    public abstract class UnityEvent<T0>
    {
        public void AddListener(UnityAction<T0> call) { }
        public void Invoke(T0 arg0) { }
    }

    public abstract class UnityEvent<T0, T1>
    {
        public void AddListener(UnityAction<T0, T1> call) { }
        public void Invoke(T0 arg0, T1 arg1) { }
    }

    public abstract class UnityEvent<T0, T1, T2>
    {
        public void AddListener(UnityAction<T0, T1, T2> call) { }
        public void Invoke(T0 arg0, T1 arg1, T2 arg2) { }
    }
}
